"""A local socket answering with the running forwarder's stats, for `openalgo-forwarder stats`.

Each connection receives one JSON document (the stats snapshot) and is closed; the client sends
nothing. The socket is a file only its owner (and root) may open, so the numbers never leave the
machine and no other local user can read them.
"""

from __future__ import annotations

import json
import os
import socket
import socketserver
from collections.abc import Callable
from pathlib import Path
from typing import Final

import msgspec
import structlog

from emitter.config import ipc_path
from forwarder.errors import ForwarderError
from forwarder.ops._threaded import ThreadedServer
from forwarder.stats import Snapshot
from forwarder.unix_socket import listening

__all__ = [
    "ControlError",
    "ControlServer",
    "control_path",
    "query",
]

log = structlog.get_logger("forwarder.control")

SOCKET_NAME: Final = "control.sock"


class ControlError(ForwarderError):
    """The stats could not be served or fetched; the message says what to check."""


def control_path(endpoint: str, state_dir: Path) -> Path:
    """Beside the ipc socket (the runtime directory under systemd), else in the state directory."""
    events = ipc_path(endpoint)
    return (events.parent if events is not None else state_dir) / SOCKET_NAME


class ControlServer(ThreadedServer):
    """Serves the snapshot on an AF_UNIX stream socket from a daemon thread."""

    thread_name = "control-socket"

    def __init__(self, path: Path, snapshot: Callable[[], Snapshot], *, mode: int = 0o600) -> None:
        super().__init__()
        self.path = path
        self.snapshot = snapshot
        self.mode = mode
        self._inode: int | None = None

    def _bind(self) -> _Server:
        """A stale socket file left by a crash is replaced, a live one is an error."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.path.is_socket():
            if listening(self.path):
                raise ControlError(f"another forwarder already answers on {self.path}")
            self.path.unlink()
        try:
            server = _Server(str(self.path), self)
        except OSError as exc:
            raise ControlError(f"cannot listen on {self.path}: {exc}") from exc
        self._inode = self.path.stat().st_ino
        return server

    def _closed(self) -> None:
        """Remove the socket file, unless another process has replaced it."""
        try:
            if self.path.stat().st_ino == self._inode:
                self.path.unlink()
        except FileNotFoundError:
            pass

    def document(self) -> bytes:
        """The snapshot as one JSON line; a failing snapshot becomes an error the client shows."""
        try:
            return json.dumps(self.snapshot().as_dict()).encode() + b"\n"
        except Exception as exc:
            log.error("control_snapshot_failed", error=repr(exc))
            return json.dumps({"error": f"stats snapshot failed: {exc!r}"}).encode() + b"\n"


class _Server(socketserver.UnixStreamServer):
    def __init__(self, path: str, app: ControlServer) -> None:
        self.app = app
        super().__init__(path, _Handler)

    def server_bind(self) -> None:
        """Restrict the file before listen(): until then a connect is refused, so none slips in."""
        super().server_bind()
        os.chmod(self.app.path, self.app.mode)


class _Handler(socketserver.StreamRequestHandler):
    timeout = 5
    server: _Server

    def handle(self) -> None:
        self.wfile.write(self.server.app.document())


def query(path: Path, timeout: float = 5.0) -> Snapshot:
    """Ask the running forwarder for its stats; ControlError names the reason it could not."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        raise ControlError(
            f"no forwarder is answering on {path} ({exc.strerror}): is it running? "
            "Try `systemctl status openalgo-forwarder`"
        ) from exc
    except PermissionError as exc:
        raise ControlError(
            f"not allowed to open {path}: run this as the forwarder's user or as root"
        ) from exc
    except TimeoutError as exc:
        raise ControlError(f"the forwarder did not answer on {path} within {timeout:g} s") from exc
    except OSError as exc:
        raise ControlError(f"cannot reach the forwarder on {path}: {exc}") from exc
    try:
        document = json.loads(b"".join(chunks))
    except ValueError as exc:
        raise ControlError(f"the answer on {path} is not a stats document: {exc}") from exc
    if isinstance(document, dict) and "error" in document:
        raise ControlError(f"the forwarder could not report its stats: {document['error']}")
    try:
        return Snapshot.from_dict(document)
    except msgspec.ValidationError as exc:
        raise ControlError(f"the answer on {path} is not a stats document: {exc}") from exc
