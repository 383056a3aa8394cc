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
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

import structlog

from emitter.config import ipc_path
from forwarder.errors import ForwarderError
from forwarder.printable import printable

__all__ = [
    "ControlError",
    "ControlServer",
    "control_path",
    "format_duration",
    "query",
    "render_stats",
]

log = structlog.get_logger("forwarder.control")

SOCKET_NAME: Final = "control.sock"

Snapshot = Callable[[], Mapping[str, Any]]


class ControlError(ForwarderError):
    """The stats could not be served or fetched; the message says what to check."""


def control_path(endpoint: str, state_dir: Path) -> Path:
    """Beside the ipc socket (the runtime directory under systemd), else in the state directory."""
    events = ipc_path(endpoint)
    return (events.parent if events is not None else state_dir) / SOCKET_NAME


class ControlServer:
    """Serves the snapshot on an AF_UNIX stream socket from a daemon thread."""

    def __init__(self, path: Path, snapshot: Snapshot, *, mode: int = 0o600) -> None:
        self.path = path
        self.snapshot = snapshot
        self.mode = mode
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._inode: int | None = None

    def start(self) -> None:
        """Bind; a stale socket file left by a crash is replaced, a live one is an error."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.path.is_socket():
            if _answers(self.path):
                raise ControlError(f"another forwarder already answers on {self.path}")
            self.path.unlink()
        try:
            self._server = _Server(str(self.path), self)
        except OSError as exc:
            raise ControlError(f"cannot listen on {self.path}: {exc}") from exc
        self._inode = self.path.stat().st_ino
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="control-socket", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        """Stop answering and remove the socket file, unless another process has replaced it."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        try:
            if self.path.stat().st_ino == self._inode:
                self.path.unlink()
        except FileNotFoundError:
            pass
        self._server = None
        self._thread = None

    def __enter__(self) -> ControlServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def document(self) -> bytes:
        """The snapshot as one JSON line; a failing snapshot becomes an error the client shows."""
        try:
            return json.dumps(self.snapshot(), default=_plain).encode() + b"\n"
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


def query(path: Path, timeout: float = 5.0) -> dict[str, Any]:
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
    if not isinstance(document, dict):
        raise ControlError(f"the answer on {path} is not a stats document")
    if "error" in document:
        raise ControlError(f"the forwarder could not report its stats: {document['error']}")
    return document


def render_stats(snapshot: Mapping[str, Any]) -> str:
    """The snapshot as a table an operator reads at a glance; `--json` gives the raw numbers."""
    lines = [
        f"forwarder pid {snapshot['pid']}, up {format_duration(snapshot['uptime_s'])}",
        f"received {snapshot['received']:,} events, "
        f"{snapshot['decode_failures']:,} decode failures",
    ]
    sinks: Mapping[str, Mapping[str, Any]] = snapshot["sinks"]
    if not sinks:
        return "\n".join([*lines, "", "no sink configured"]) + "\n"
    header = ("sink", "delivered", "retried", "buffered", "oldest", "dead-lettered", "dropped")
    rows = [header]
    states = []
    for name, sink in sinks.items():
        oldest = sink.get("oldest_age_s")
        rows.append(
            (
                printable(name),
                f"{sink['delivered']:,}",
                f"{sink['retried']:,}",
                f"{sink['queued']:,}",
                "-" if oldest is None else format_duration(oldest),
                f"{sink['dead_lettered']:,}",
                f"{sink['dropped']:,}",
            )
        )
        states.append(_state(sink))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines.append("")
    for row, state in zip(rows, ["state", *states], strict=True):
        cells = [row[0].ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join([*cells, state]))
    return "\n".join(lines) + "\n"


def format_duration(seconds: float) -> str:
    """Short and exact enough: 0.4 s, 42 s, 3m 05s, 2h 01m, 3d 04h."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours:02d}h"


def _state(sink: Mapping[str, Any]) -> str:
    if not sink.get("configured", True):
        return "not in ORDER_EVENT_MODE: kept until it is again"
    since = sink.get("retrying_since_s")
    if since is None:
        return "delivering"
    error = sink.get("last_error")
    detail = f": {printable(str(error))}" if error else ""
    return f"retrying for {format_duration(since)}{detail}"


def _answers(path: Path) -> bool:
    """Whether a process listens there; only a refused connection proves the file is stale."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            return False
        except OSError:
            return True
        return True


def _plain(value: object) -> object:
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
