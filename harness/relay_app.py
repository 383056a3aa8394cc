"""The trading app's side: Flask-SocketIO set up as OpenAlgo's, with the forwarder's relay.

Run as `python -m harness.relay_app [--port N]` (0, the default, picks a free port): it prints
`PORT <n>` once it listens on 127.0.0.1 and stops cleanly on SIGTERM. The relay secret comes
from SOCKETIO_RELAY_SECRET, as in the README, never from argv. A browser joins the room named
by its `auth` user. With `--browser-page DIR` it also serves DIR's page for headless Chromium
(`/browser`), which echoes every event it receives back, readable at `/browser/received`.

`RelayServer` runs it as a child process that can be stopped and started again on its port.
"""

from __future__ import annotations

import argparse
import logging
import os
import select
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any, Final

import flask
import flask_socketio
from werkzeug.serving import WSGIRequestHandler, make_server

from emitter.relay import install_relay
from harness.processes import Child, Report, Service, StartError, child_env, silent

__all__ = ["SECRET_VARIABLE", "ClosingRequestHandler", "RelayServer", "main"]

SECRET_VARIABLE: Final = "SOCKETIO_RELAY_SECRET"  # noqa: S105 - a variable name, no secret
_START_TIMEOUT_S: Final = 30.0
_GRACE_S: Final = 10.0
_BUNDLE: Final = "node_modules/socket.io-client/dist/socket.io.min.js"


class ClosingRequestHandler(WSGIRequestHandler):
    """Close each TCP connection after its request, as servers other than Werkzeug do.

    Werkzeug keeps a connection open for another HTTP request after a WebSocket on it ended,
    so a closing python-socketio client waits 3 s for a close that never comes.
    """

    protocol_version = "HTTP/1.0"


def _build_app(
    secret: str, per_user_rooms: bool, max_http_buffer_size: int | None, page: Path | None
) -> tuple[flask.Flask, flask_socketio.SocketIO]:
    """OpenAlgo's Socket.IO options and the relay, plus the page the browser test loads."""
    app = flask.Flask(__name__)
    app.json.sort_keys = False  # type: ignore[attr-defined] # the browser test compares key order
    limits = {} if max_http_buffer_size is None else {"max_http_buffer_size": max_http_buffer_size}
    sio = flask_socketio.SocketIO(
        app,
        async_mode="threading",
        ping_timeout=60,
        ping_interval=25,
        cors_allowed_origins="*",
        **limits,
    )
    install_relay(sio, secret, per_user_rooms=per_user_rooms)

    def join_user_room(auth: Any = None) -> None:
        if isinstance(auth, dict) and isinstance(auth.get("user"), str):
            flask_socketio.join_room(auth["user"])

    sio.on_event("connect", join_user_room)

    if page is not None:
        _serve_browser_page(app, sio, page)
    return app, sio


def _serve_browser_page(app: flask.Flask, sio: flask_socketio.SocketIO, page: Path) -> None:
    received: dict[int, list[Any]] = {}
    connects: list[bool] = []
    lock = threading.Lock()

    def record(arrival: int, event: str, payload: Any) -> None:
        with lock:
            received[arrival] = [event, payload]

    def ready() -> None:
        with lock:
            connects.append(True)

    sio.on_event("browser_received", record)
    sio.on_event("browser_ready", ready)

    @app.get("/browser")
    def browser_page() -> Any:
        return flask.send_file(page / "page.html", mimetype="text/html")

    @app.get("/socket.io.min.js")
    def bundle() -> Any:
        return flask.send_file(page / _BUNDLE, mimetype="text/javascript")

    @app.get("/browser/received")
    def browser_received() -> Any:
        with lock:
            return flask.jsonify(
                connects=len(connects), received=[received[k] for k in sorted(received)]
            )


def main() -> None:
    """Serve until SIGTERM or SIGINT, then end Socket.IO's background tasks before the server."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--per-user-rooms", action="store_true")
    parser.add_argument("--max-http-buffer-size", type=int)
    parser.add_argument("--browser-page", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    app, sio = _build_app(
        os.environ[SECRET_VARIABLE],
        args.per_user_rooms,
        args.max_http_buffer_size,
        args.browser_page,
    )
    server = make_server(
        "127.0.0.1", args.port, app, threaded=True, request_handler=ClosingRequestHandler
    )
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    serving = threading.Thread(target=server.serve_forever, name="werkzeug")
    serving.start()
    print(f"PORT {server.server_port}", flush=True)
    stop.wait()
    sio.server.shutdown()
    server.shutdown()
    serving.join()
    server.server_close()


class RelayServer(Service):
    """The app as a child process: start, stop, and start again on the same port."""

    def __init__(
        self,
        secret: str,
        log_path: Path,
        *,
        per_user_rooms: bool = False,
        max_http_buffer_size: int | None = None,
        browser_page: Path | None = None,
        report: Report = silent,
    ) -> None:
        self.secret = secret
        self.log_path = log_path
        self.per_user_rooms = per_user_rooms
        self.max_http_buffer_size = max_http_buffer_size
        self.browser_page = browser_page
        self.port = 0
        self._report = report
        self._child: Child | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self._child is None else self._child.pid

    def start(self) -> None:
        """Start it and return once it listens; raise StartError with its log if it does not."""
        argv = [sys.executable, "-m", "harness.relay_app", "--port", str(self.port)]
        if self.per_user_rooms:
            argv.append("--per-user-rooms")
        if self.max_http_buffer_size is not None:
            argv += ["--max-http-buffer-size", str(self.max_http_buffer_size)]
        if self.browser_page is not None:
            argv += ["--browser-page", str(self.browser_page)]
        with self.log_path.open("ab") as log:
            self._child = Child(
                "socketio-app",
                argv,
                env=child_env(**{SECRET_VARIABLE: self.secret}),
                grace_s=_GRACE_S,
                stdout=subprocess.PIPE,
                stderr=log,
                report=self._report,
            )
        try:
            self.port = self._read_port(self._child)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """End it (SIGTERM, SIGKILL after a grace period); safe to call when not running."""
        started, self._child = self._child, None
        if started is not None:
            started.stop()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _read_port(self, started: Child) -> int:
        stdout = started.process.stdout
        assert stdout is not None
        with stdout:
            ready, _, _ = select.select([stdout], [], [], _START_TIMEOUT_S)
            line = stdout.readline().decode() if ready else ""
        if not line.startswith("PORT "):
            raise StartError(f"the Socket.IO app did not start:\n{self.log_text()}")
        return int(line.split()[1])


if __name__ == "__main__":
    main()
