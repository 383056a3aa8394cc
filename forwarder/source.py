"""The receiving end: one ZeroMQ PULL socket every emitting process (gunicorn worker) pushes to."""

from __future__ import annotations

import grp
import os
import stat
from pathlib import Path
from typing import Final

import structlog
import zmq
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils.monitor import recv_monitor_message

from emitter.config import ConfigError, ipc_path
from forwarder.access import blocked_at, group_members
from forwarder.curve import CurveServer, read_clients
from forwarder.errors import ForwarderError
from forwarder.settings import MAX_FRAME_BYTES, Settings
from forwarder.unix_socket import listening

__all__ = ["MAX_FRAMES", "RCVHWM", "Source"]

RCVHWM: Final = 100_000
"""Frames ZeroMQ may hold per emitter while the forwarder is busy: a burst, not a backlog."""
MAX_FRAMES: Final = 1_000
"""Most frames one receive returns, so the stop flag and the stats timer are looked at often."""
_SUN_PATH_MAX: Final = 107
"""Longest Unix socket path Linux accepts (108 bytes with the terminating NUL)."""

_HANDSHAKE_FAILED: Final = (
    zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)

log = structlog.get_logger("forwarder.source")


class Source:
    """Binds the endpoint, guarding an ipc socket's directory, and hands frames over in bursts."""

    def __init__(
        self,
        endpoint: str,
        *,
        socket_group: str | None = None,
        max_frame_bytes: int = MAX_FRAME_BYTES,
        curve: CurveServer | None = None,
    ) -> None:
        self.endpoint = endpoint
        self._path = ipc_path(endpoint)
        self._gid = _group_id(socket_group)
        self._max_frame_bytes = max_frame_bytes
        self._curve = curve
        self._context: zmq.Context[zmq.Socket[bytes]] | None = None
        self._socket: zmq.Socket[bytes] | None = None
        self._monitor: zmq.Socket[bytes] | None = None
        self._authenticator: ThreadAuthenticator | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Source:
        """The source the settings describe."""
        return cls(
            settings.endpoint,
            socket_group=settings.socket_group,
            max_frame_bytes=settings.max_frame_bytes,
            curve=settings.curve,
        )

    @property
    def _dir_mode(self) -> int:
        return 0o700 if self._gid is None else 0o750

    @property
    def _file_mode(self) -> int:
        return 0o600 if self._gid is None else 0o660

    def bind(self) -> None:
        """Take the endpoint; a running forwarder's ipc socket is refused, a stale one replaced."""
        if self._path is not None:
            self._prepare_directory(create=True)
            if _socket_state(self._path) == "listening":
                raise self._error("an ipc path no running forwarder is bound to")
            self._path.unlink(missing_ok=True)
        context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        pull = context.socket(zmq.PULL)
        pull.setsockopt(zmq.RCVHWM, RCVHWM)
        pull.setsockopt(zmq.LINGER, 0)
        # ZeroMQ reads a frame's length first and drops the connection of a peer announcing more:
        # the frame is never read into memory (its content and length never reach us).
        pull.setsockopt(zmq.MAXMSGSIZE, self._max_frame_bytes)
        self._monitor = pull.get_monitor_socket(zmq.EVENT_DISCONNECTED | _HANDSHAKE_FAILED)
        if self._curve is not None:
            self._authenticator = self._curve.start(context)
            self._curve.secure(pull)
        # The socket file is born 0600: no one but this user may connect before its group is set.
        umask = os.umask(0o177)
        try:
            pull.bind(self.endpoint)
        except zmq.ZMQError as exc:
            self._close_monitor(pull)
            pull.close()
            self._stop_authenticator()
            context.term()
            raise self._error(f"an endpoint this process can bind ({exc.strerror})") from exc
        finally:
            os.umask(umask)
        self._context, self._socket = context, pull
        if self._path is not None:
            if self._gid is not None:
                os.chown(self._path, -1, self._gid)
            os.chmod(self._path, self._file_mode)

    def describe(self) -> str:
        """What binding would find, and who could connect, without binding: `check` may run
        beside a forwarder. Raises ForwarderError, with the same text, when FORWARDER_SOCKET_GROUP
        is set and none of its members could connect."""
        if self._path is None:
            if self._curve is None:
                return f"{self.endpoint} (tcp without CURVE: FORWARDER_ALLOW_INSECURE_TCP=1)"
            clients = read_clients("FORWARDER_CURVE_CLIENTS_FILE", self._curve.clients_file)
            return (
                f"{self.endpoint} (tcp, CURVE: {len(clients)} emitter key(s) accepted from "
                f"{self._curve.clients_file})"
            )
        verdict = self._prepare_directory(create=False)
        state = _socket_state(self._path)
        who, anyone = self._who_can_connect(state)
        text = f"{self.endpoint}: {verdict}, socket {state}; {who}"
        if not anyone:
            raise ForwarderError(text)
        return text

    def _who_can_connect(self, state: str) -> tuple[str, bool]:
        """Which members of the socket group can connect, and whether any can."""
        assert self._path is not None
        if self._gid is None:
            return "only this user and root can connect (no FORWARDER_SOCKET_GROUP)", True
        group = grp.getgrgid(self._gid).gr_name
        members = group_members(self._gid)
        if not members:
            return f"group {group} has no members: no other user can connect", False
        expected = self._expected_socket(state)
        verdicts = []
        anyone = False
        for member in members:
            blocked = blocked_at(member, self._path, expected)
            anyone = anyone or blocked is None
            verdicts.append(
                member.name + (" can connect" if blocked is None else f" cannot ({blocked})")
            )
        return f"group {group}: " + ", ".join(verdicts), anyone

    def _expected_socket(self, state: str) -> os.stat_result | None:
        """The socket as it is when bound, else as bind() will make it (owner, group, mode)."""
        if state == "listening":
            return None
        assert self._path is not None
        gid = os.getegid() if self._gid is None else self._gid
        mode = stat.S_IFSOCK | self._file_mode
        return os.stat_result((mode, 0, 0, 1, os.geteuid(), gid, 0, 0, 0, 0))

    def receive(self, timeout_ms: int) -> list[bytes]:
        """Wait up to `timeout_ms` for a frame, then take all already queued (up to a cap)."""
        pull = self._bound()
        if not pull.poll(timeout_ms, zmq.POLLIN):
            return []
        frames: list[bytes] = []
        while len(frames) < MAX_FRAMES:
            try:
                frames.append(pull.recv(zmq.NOBLOCK))
            except zmq.Again:
                break
        return frames

    def connection_events(self) -> tuple[int, int]:
        """Emitter connections that ended, and handshakes refused, since the last call.

        A connection ends when a process exits, and when ZeroMQ drops a peer that sent a frame
        over the limit (the monitor cannot tell which). A handshake is refused when a client's
        key is not listed, or it speaks no CURVE to a CURVE endpoint (its connection then ends
        too, and is counted as well)."""
        monitor = self._monitor
        ended = refused = 0
        while monitor is not None:
            try:
                event = recv_monitor_message(monitor, zmq.NOBLOCK)["event"]
            except zmq.Again:
                break
            if event == zmq.EVENT_DISCONNECTED:
                ended += 1
            else:
                refused += 1
        return ended, refused

    def close(self) -> None:
        """Stop receiving and remove the socket file; frames still queued in ZeroMQ are lost."""
        if self._socket is not None:
            self._close_monitor(self._socket)
            self._socket.close(linger=0)
            self._socket = None
            if self._path is not None:
                self._path.unlink(missing_ok=True)
        self._stop_authenticator()
        if self._context is not None:
            self._context.term()
            self._context = None

    def _stop_authenticator(self) -> None:
        if self._authenticator is not None:
            self._authenticator.stop()
            self._authenticator = None

    def _close_monitor(self, pull: zmq.Socket[bytes]) -> None:
        if self._monitor is not None:
            pull.disable_monitor()
            self._monitor.close(linger=0)
            self._monitor = None

    def _bound(self) -> zmq.Socket[bytes]:
        if self._socket is None:
            raise RuntimeError("Source.receive() before bind()")
        return self._socket

    def _prepare_directory(self, *, create: bool) -> str:
        """Make the socket's directory, or take an existing one, and give it the mode and group
        the settings ask for; without `create` only say what bind() would find and change."""
        assert self._path is not None
        if len(os.fsencode(self._path)) > _SUN_PATH_MAX:
            raise self._error(f"an ipc path of at most {_SUN_PATH_MAX} bytes")
        directory = self._path.parent
        wanted = f"mode {self._dir_mode:04o}" + (
            "" if self._gid is None else f" group {grp.getgrgid(self._gid).gr_name}"
        )
        if not directory.exists():
            if not create:
                return f"directory {directory} will be created with {wanted}"
            try:
                directory.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                directory.mkdir(mode=0o700)
            except OSError as exc:
                raise self._error(
                    f"an ipc path whose directory {directory} can be made ({exc.strerror})"
                ) from exc
        info = directory.lstat()
        if not stat.S_ISDIR(info.st_mode):
            raise self._error(f"an ipc path whose parent {directory} is a real directory")
        if info.st_uid != os.geteuid():
            raise self._error(
                f"an ipc path in a directory owned by this user (uid {os.geteuid()}); "
                f"{directory} belongs to uid {info.st_uid}"
            )
        if info.st_mode & stat.S_IWOTH:
            raise self._error(f"an ipc path in a directory others cannot write; {directory} is")
        found = f"mode {stat.S_IMODE(info.st_mode):04o}" + (
            "" if self._gid is None else f" group {_group_name(info.st_gid)}"
        )
        if found == wanted:
            return f"directory {directory} {found}"
        if not create:
            return f"directory {directory} {found} (set to {wanted} at start)"
        self._restrict(directory)
        log.info("socket_directory_restricted", directory=str(directory), was=found, now=wanted)
        return f"directory {directory} {wanted}"

    def _restrict(self, directory: Path) -> None:
        """The group first, then the mode: the directory never opens to a group not yet ours."""
        try:
            if self._gid is not None:
                os.chown(directory, -1, self._gid)
            os.chmod(directory, self._dir_mode)
        except OSError as exc:
            raise ConfigError(
                "FORWARDER_SOCKET_GROUP",
                "" if self._gid is None else grp.getgrgid(self._gid).gr_name,
                f"a group this user may give {directory} to ({exc.strerror})",
            ) from exc

    def _error(self, accepted: str) -> ConfigError:
        return ConfigError("FORWARDER_ENDPOINT", self.endpoint, accepted)


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _group_id(name: str | None) -> int | None:
    if name is None:
        return None
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise ConfigError("FORWARDER_SOCKET_GROUP", name, "the name of an existing group") from None


def _socket_state(path: Path) -> str:
    """'listening' when a process accepts on it, 'stale' for a leftover, else 'absent'."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return "absent"
    if not stat.S_ISSOCK(info.st_mode):
        raise ConfigError(
            "FORWARDER_ENDPOINT", f"ipc://{path}", "an ipc path that is a socket or does not exist"
        )
    return "listening" if listening(path) else "stale"
