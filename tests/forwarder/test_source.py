"""The PULL socket: its private directory, stale and live sockets, bursts and several emitters."""

from __future__ import annotations

import errno
import grp
import json
import os
import pwd
import socket
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import forwarder.source
from emitter.config import ConfigError
from emitter.contract import decode_envelope, encode_envelope
from forwarder.errors import ForwarderError
from forwarder.source import MAX_FRAMES, Source
from harness.events import numbered, push_frames, pusher
from harness.forwarder import ForwarderProcess, forwarder_env, run_cli
from harness.net import free_port
from harness.waits import poll
from tests.support.frames import emitting_processes, push_envelopes


def peak_rss_bytes(pid: int) -> int:
    """The most memory the process has held at once (VmHWM): a frame read whole shows here even
    after it was freed."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for {pid}")


@contextmanager
def bound(endpoint: str, group: str | None = None) -> Iterator[Source]:
    source = Source(endpoint, socket_group=group)
    source.bind()
    try:
        yield source
    finally:
        source.close()


def receive_all(source: Source, count: int, timeout_s: float = 30) -> list[bytes]:
    frames: list[bytes] = []
    for _ in range(int(timeout_s * 10)):
        frames += source.receive(100)
        if len(frames) >= count:
            break
    return frames


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def endpoint(tmp_path):
    return f"ipc://{tmp_path}/run/events.sock"


needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="acting as another user (nobody) needs root"
)


def connect_as(user: str, path: Path) -> int:
    """0 when `user` (with their groups) can connect to the Unix socket, else the errno."""
    entry = pwd.getpwnam(user)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child ends with os._exit
        status = 0
        try:
            os.setgroups(os.getgrouplist(user, entry.pw_gid))
            os.setgid(entry.pw_gid)
            os.setuid(entry.pw_uid)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                probe.connect(str(path))
        except OSError as exc:
            status = exc.errno or 1
        os._exit(status)
    _, waited = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(waited)


class TestIpcDirectory:
    def test_the_directory_is_created_0700_and_the_socket_0600(self, tmp_path, endpoint):
        """Without a socket group only the forwarder's user may connect."""
        with bound(endpoint):
            assert mode(tmp_path / "run") == 0o700
            assert mode(tmp_path / "run" / "events.sock") == 0o600
            assert stat.S_ISSOCK(os.stat(tmp_path / "run" / "events.sock").st_mode)

    def test_a_socket_group_gets_0750_and_0660_with_that_group(self, tmp_path, endpoint):
        """FORWARDER_SOCKET_GROUP lets the app's user connect without opening it to everyone."""
        if os.geteuid() != 0 and len(os.getgroups()) < 2:
            pytest.skip("needs root or a second group to hand the socket to")
        own = os.getgid()
        group = next(
            g
            for g in grp.getgrall()
            if g.gr_gid != own and (os.geteuid() == 0 or g.gr_gid in os.getgroups())
        )
        with bound(endpoint, group.gr_name):
            directory, sock = tmp_path / "run", tmp_path / "run" / "events.sock"
            assert (mode(directory), os.stat(directory).st_gid) == (0o750, group.gr_gid)
            assert (mode(sock), os.stat(sock).st_gid) == (0o660, group.gr_gid)

    def test_an_unknown_group_is_a_config_error(self, endpoint):
        """A typo in the group name stops the forwarder with the variable named."""
        with pytest.raises(ConfigError) as caught:
            Source(endpoint, socket_group="no-such-group-here")
        assert caught.value.variable == "FORWARDER_SOCKET_GROUP"
        assert caught.value.value == "no-such-group-here"

    def test_a_directory_owned_by_someone_else_is_refused(self, tmp_path):
        """Another user could swap the socket for their own and read every event."""
        directory = Path("/")  # root's, unless the test runs as root
        if os.geteuid() == 0:
            directory = tmp_path / "theirs"
            directory.mkdir(mode=0o700)
            os.chown(directory, 65534, 65534)
        with pytest.raises(ConfigError, match="owned by this user") as caught:
            Source(f"ipc://{directory}/events.sock").bind()
        assert caught.value.variable == "FORWARDER_ENDPOINT"

    def test_a_directory_others_can_write_is_refused(self, tmp_path):
        """A world-writable directory (like /tmp) lets anyone replace the socket."""
        directory = tmp_path / "open"
        directory.mkdir()
        directory.chmod(0o1777)
        with pytest.raises(ConfigError, match="others cannot write"):
            Source(f"ipc://{directory}/events.sock").bind()

    def test_a_symlinked_directory_is_refused(self, tmp_path):
        """Ownership is judged on the directory itself, so a link to elsewhere is not trusted."""
        real = tmp_path / "real"
        real.mkdir(mode=0o700)
        (tmp_path / "link").symlink_to(real)
        with pytest.raises(ConfigError, match="real directory"):
            Source(f"ipc://{tmp_path}/link/events.sock").bind()

    def test_a_path_longer_than_a_unix_socket_allows_is_a_config_error(self, tmp_path):
        """Linux cuts socket paths at 107 bytes; say so instead of binding somewhere else."""
        with pytest.raises(ConfigError, match="107 bytes"):
            Source(f"ipc://{tmp_path}/{'d' * 120}/events.sock").bind()

    def test_a_regular_file_at_the_socket_path_is_refused(self, tmp_path, endpoint):
        """Something that is not a socket is not ours to delete."""
        (tmp_path / "run").mkdir(mode=0o700)
        (tmp_path / "run" / "events.sock").write_text("keep me")
        with pytest.raises(ConfigError, match="socket"):
            Source(endpoint).bind()
        assert (tmp_path / "run" / "events.sock").read_text() == "keep me"


class TestDirectoryEnforced:
    def test_an_existing_directory_open_to_others_is_restricted(self, tmp_path, endpoint):
        """A pre-existing 0755 directory is made 0700, as a new one would be; `check` said so."""
        (tmp_path / "run").mkdir(mode=0o755)
        (tmp_path / "run").chmod(0o755)
        assert "mode 0755 (set to mode 0700 at start)" in Source(endpoint).describe()
        with bound(endpoint):
            assert mode(tmp_path / "run") == 0o700
            assert "directory" in Source(endpoint).describe()

    def test_the_socket_is_private_from_the_moment_it_exists(self, tmp_path, endpoint, monkeypatch):
        """Created under a tight umask, whatever the process's own: its mode is 0600 before the
        forwarder sets the final one."""
        seen: list[int] = []
        real_chmod = os.chmod

        def watching_chmod(path, mode_, *args, **kwargs):
            if Path(path).name == "events.sock":
                seen.append(stat.S_IMODE(os.stat(path).st_mode))
            return real_chmod(path, mode_, *args, **kwargs)

        monkeypatch.setattr(forwarder.source.os, "chmod", watching_chmod)
        previous = os.umask(0)
        try:
            with bound(endpoint):
                assert os.umask(0) == 0
        finally:
            os.umask(previous)
        assert seen == [0o600]

    @needs_root
    def test_an_existing_directory_gets_the_socket_group_and_a_member_connects(self, shared_tmp):
        """A directory left 0700 root:root is given FORWARDER_SOCKET_GROUP and 0750, so the
        group's member really connects, and `check` says they can."""
        directory = shared_tmp / "run"
        directory.mkdir(mode=0o700)
        endpoint = f"ipc://{directory}/events.sock"
        with bound(endpoint, "nogroup"):
            info = os.stat(directory)
            assert (stat.S_IMODE(info.st_mode), info.st_gid) == (
                0o750,
                grp.getgrnam("nogroup").gr_gid,
            )
            assert connect_as("nobody", directory / "events.sock") == 0
            assert "nobody can connect" in Source(endpoint, socket_group="nogroup").describe()

    @needs_root
    def test_check_tells_a_member_blocked_on_the_way_truthfully(self, shared_tmp):
        """A directory above the socket that the group cannot enter stops its members: `check`
        fails the endpoint naming it, and a real connection is refused; once it is opened,
        both agree the other way."""
        private = shared_tmp / "private"
        private.mkdir(mode=0o700)
        endpoint = f"ipc://{private}/run/events.sock"
        with bound(endpoint, "nogroup"):
            with pytest.raises(ForwarderError, match=f"nobody cannot \\({private} is mode 0700\\)"):
                Source(endpoint, socket_group="nogroup").describe()
            assert connect_as("nobody", private / "run" / "events.sock") == errno.EACCES
            private.chmod(0o711)
            assert "nobody can connect" in Source(endpoint, socket_group="nogroup").describe()
            assert connect_as("nobody", private / "run" / "events.sock") == 0


class TestFrameLimit:
    def test_a_frame_over_the_limit_is_never_read_and_its_connection_ends(self, endpoint):
        """ZeroMQ drops the sender's connection on the frame's length: the frames around it
        arrive, the big one does not, and the disconnection is counted."""
        limited = Source(endpoint, max_frame_bytes=64 << 10)
        limited.bind()
        try:
            with pusher(endpoint) as push:
                push.send(b"before")
                assert receive_all(limited, 1) == [b"before"]
                assert limited.connection_events()[0] == 0
                push.send(b"x" * (1 << 20))
                push.send(b"after")
                assert receive_all(limited, 1) == [b"after"]
                assert (poll(lambda: limited.connection_events()[0], 5) or 0) >= 1
            # Closing the sender ends its second connection: counted once, then nothing more.
            assert (poll(lambda: limited.connection_events()[0], 5) or 0) >= 1
            assert limited.connection_events()[0] == 0
        finally:
            limited.close()

    def test_a_frame_at_the_limit_arrives_whole(self, endpoint):
        """The limit is the largest frame taken, not one byte less."""
        limited = Source(endpoint, max_frame_bytes=64 << 10)
        limited.bind()
        try:
            push_frames(endpoint, [b"y" * (64 << 10)])
            assert receive_all(limited, 1) == [b"y" * (64 << 10)]
        finally:
            limited.close()


@pytest.mark.integration
class TestFrameLimitInTheDaemon:
    def test_a_huge_frame_costs_no_memory_and_writes_no_dead_letter(self, tmp_path, forwarders):
        """A 100 MiB garbage frame used to be read whole and dead-lettered whole (RSS up by
        hundreds of MiB, a dead letter over the cap): now the forwarder's memory does not grow
        by a tenth of it, nothing is written, and the event behind it is received."""
        env = forwarder_env(
            tmp_path,
            ORDER_EVENT_MODE="KAFKA",
            KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}",
        )
        process = ForwarderProcess(env)
        forwarders.append(process)
        process.start()
        before = peak_rss_bytes(process.pid)
        huge = 100 << 20
        with pusher(env["FORWARDER_ENDPOINT"]) as push:
            push.send(b"\xc1" * huge)
            push.send(encode_envelope(numbered(1)))
        line = process.wait_for_log("emitter_disconnected")
        assert "FORWARDER_MAX_FRAME_BYTES" in line["cause"]
        deadline = time.monotonic() + 30
        stats = json.loads(run_cli("stats", "--json", env=env).stdout)
        while stats["received"] < 1 and time.monotonic() < deadline:
            stats = json.loads(run_cli("stats", "--json", env=env).stdout)
        assert (stats["received"], stats["decode_failures"]) == (1, 0)
        assert peak_rss_bytes(process.pid) - before < huge // 10
        assert not (tmp_path / "state" / "dead-letters.jsonl").exists()


class TestSocketFile:
    def test_a_stale_socket_is_replaced(self, tmp_path, endpoint):
        """A forwarder killed with SIGKILL leaves its socket file behind; the next one starts."""
        (tmp_path / "run").mkdir(mode=0o700)
        leftover = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        leftover.bind(str(tmp_path / "run" / "events.sock"))
        leftover.close()
        assert Source(endpoint).describe().split("; ")[0].endswith("socket stale")
        with bound(endpoint) as source:
            push_frames(endpoint, [b"after restart"])
            assert receive_all(source, 1) == [b"after restart"]

    def test_the_socket_of_a_running_forwarder_is_not_taken(self, endpoint):
        """A second forwarder on the same endpoint would silently steal half the events."""
        with bound(endpoint) as first:
            assert Source(endpoint).describe().split("; ")[0].endswith("socket listening")
            with pytest.raises(ConfigError, match="no running forwarder"):
                Source(endpoint).bind()
            push_frames(endpoint, [b"still mine"])
            assert receive_all(first, 1) == [b"still mine"]

    def test_close_removes_the_socket_file(self, tmp_path, endpoint):
        """Emitters then see the forwarder gone rather than a dead socket."""
        with bound(endpoint):
            pass
        assert not (tmp_path / "run" / "events.sock").exists()
        assert Source(endpoint).describe().split("; ")[0].endswith("socket absent")

    def test_describe_does_not_create_anything(self, tmp_path, endpoint):
        """`check` may run beside the service without touching its files."""
        assert "will be created" in Source(endpoint).describe()
        assert not (tmp_path / "run").exists()


class TestReceive:
    def test_nothing_to_read_gives_an_empty_list(self, endpoint):
        """The main loop wakes up to look at its stop flag."""
        with bound(endpoint) as source:
            assert source.receive(10) == []

    def test_a_burst_is_handed_over_in_order_in_capped_chunks(self, endpoint):
        """Decoding is batched, yet one receive never hogs the loop."""
        frames = [f"frame-{n}".encode() for n in range(2 * MAX_FRAMES + 500)]
        with bound(endpoint) as source:
            push_frames(endpoint, frames)
            chunks = []
            while sum(map(len, chunks)) < len(frames):
                chunk = source.receive(5000)
                assert chunk, "frames stopped arriving"
                chunks.append(chunk)
        assert all(len(chunk) <= MAX_FRAMES for chunk in chunks)
        assert [frame for chunk in chunks for frame in chunk] == frames

    def test_a_loopback_tcp_endpoint_works_too(self):
        """Where ipc is not possible, a loopback port carries the same frames."""
        endpoint = f"tcp://127.0.0.1:{free_port()}"
        with bound(endpoint) as source:
            push_frames(endpoint, [b"over tcp"])
            assert receive_all(source, 1) == [b"over tcp"]
            assert Source(endpoint).describe() == (
                f"{endpoint} (tcp without CURVE: FORWARDER_ALLOW_INSECURE_TCP=1)"
            )

    def test_a_tcp_port_already_taken_is_a_config_error(self):
        """Another program on the port is reported with the endpoint, not as a traceback."""
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            endpoint = f"tcp://127.0.0.1:{taken.getsockname()[1]}"
            with pytest.raises(ConfigError, match="Address already in use") as caught:
                Source(endpoint).bind()
        assert caught.value.variable == "FORWARDER_ENDPOINT"

    def test_receive_before_bind_is_a_programming_error(self, endpoint):
        """Said plainly rather than as an AttributeError on None."""
        with pytest.raises(RuntimeError, match="before bind"):
            Source(endpoint).receive(0)

    def test_three_emitting_processes_at_once_each_arrive_whole_and_in_order(self, endpoint):
        """Gunicorn workers each push on their own connection to the one endpoint."""
        calls = [(endpoint, f"p{n}", 300) for n in range(3)]
        with bound(endpoint) as source:
            with emitting_processes(push_envelopes, calls) as emitters:
                frames = receive_all(source, 900)
            assert [emitter.returncode for emitter in emitters] == [0, 0, 0]
        ids = [decode_envelope(frame).id for frame in frames]
        assert len(ids) == 900
        for n in range(3):
            assert [i for i in ids if i.startswith(f"p{n}-")] == [
                f"p{n}-{k:06d}" for k in range(300)
            ]
