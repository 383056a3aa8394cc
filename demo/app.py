"""The trading app's side, as small as it gets: Flask-SocketIO with the forwarder's relay installed.

Run as `python -m demo.app`: it prints `PORT <n>` once it listens on 127.0.0.1 and stops cleanly
on SIGTERM. The relay secret comes from SOCKETIO_RELAY_SECRET, as in the README, never from argv.
`running_app` starts it for the demo.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Final

import flask
import flask_socketio
from werkzeug.serving import WSGIRequestHandler, make_server

from demo.children import StartError, child, child_env
from emitter.relay import install_relay

__all__ = ["SECRET_VARIABLE", "main", "running_app"]

SECRET_VARIABLE: Final = "SOCKETIO_RELAY_SECRET"  # noqa: S105 - a variable name, no secret
_START_TIMEOUT_S: Final = 30.0
_GRACE_S: Final = 10.0


class _ClosingRequestHandler(WSGIRequestHandler):
    """One request per connection: else a closing Socket.IO client waits 3 s for Werkzeug."""

    protocol_version = "HTTP/1.0"


def main() -> None:
    """Serve until SIGTERM or SIGINT, then end Socket.IO's background tasks before the server."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    app = flask.Flask(__name__)
    sio = flask_socketio.SocketIO(
        app, async_mode="threading", ping_timeout=60, ping_interval=25, cors_allowed_origins="*"
    )
    install_relay(sio, os.environ[SECRET_VARIABLE])
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=_ClosingRequestHandler)
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


@contextmanager
def running_app(run_dir: Path, secret: str) -> Iterator[str]:
    """The app listening, as its URL; stopped on the way out. Its log goes to app.log."""
    log_path = run_dir / "app.log"
    with (
        log_path.open("wb") as log,
        child(
            "socketio-app",
            [sys.executable, "-m", "demo.app"],
            env=child_env(**{SECRET_VARIABLE: secret}),
            grace_s=_GRACE_S,
            stdout=subprocess.PIPE,
            stderr=log,
        ) as app,
    ):
        assert app.process.stdout is not None
        with app.process.stdout as stdout:
            ready, _, _ = select.select([stdout], [], [], _START_TIMEOUT_S)
            line = stdout.readline().decode() if ready else ""
        if not line.startswith("PORT "):
            output = log_path.read_text(errors="replace")
            raise StartError(f"the Socket.IO app did not start:\n{output}")
        yield f"http://127.0.0.1:{int(line.split()[1])}"


if __name__ == "__main__":
    main()
