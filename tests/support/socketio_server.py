"""A real Flask-SocketIO server with the relay installed, run as a subprocess tests can kill.

Run as `python -m tests.support.socketio_server --port N` (0 picks a free port); it prints
`PORT <n>` once it listens. The relay secret comes from RELAY_TEST_SECRET, never argv.
Besides the relay it serves a test page for headless Chromium (`/browser`) that echoes
every event it receives back to the server, readable at `/browser/received`.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import flask
import flask_socketio
import socketio
from werkzeug.serving import WSGIRequestHandler, make_server

from demo.browser import BrowserTab
from emitter.contract import SYSTEM_KEY, Envelope, decode_envelope, encode_envelope
from emitter.relay import install_relay

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "tests/support/browser/node_modules/socket.io-client/dist/socket.io.min.js"
PAGE = ROOT / "tests/support/browser/page.html"
SECRET_VARIABLE = "RELAY_TEST_SECRET"
START_TIMEOUT_S = 30.0

BROWSER_EVENTS: list[tuple[str, dict[str, Any], str | None]] = [
    (
        "order_event",
        {
            "symbol": "RELIANCE",
            "action": "BUY",
            "orderid": "250128000012345",
            "exchange": "NSE",
            "price_type": "MARKET",
            "product_type": "MIS",
            "mode": "live",
        },
        "alice",
    ),
    (
        "order_event",
        {
            "symbol": "NIFTY",
            "action": "SELL",
            "orderid": "2/3 legs",
            "mode": "live",
            "batch_order": True,
            "is_last_order": True,
            "multiorder_summary": True,
            "successful_legs": 2,
            "failed_legs": 1,
        },
        "alice",
    ),
    (
        "analyzer_update",
        {
            "request": {"symbol": "SBIN", "quantity": "1", "legs": [{"strike": 22500.5}, {}]},
            "response": {"status": "success", "orderid": "A1", "mode": "analyze", "data": None},
        },
        "alice",
    ),
    ("order_notification", {"symbol": "INFY", "status": "info", "message": "No action"}, "bob"),
    (
        "modify_order_event",
        {"status": "success", "orderid": "A2", "mode": "live"},
        "bob",
    ),
    (
        "cancel_order_event",
        {"status": "success", "orderid": "A3", "mode": "live"},
        "bob",
    ),
    (
        "cancel_order_event",
        {
            "status": "success",
            "orderid": "3 orders canceled",
            "mode": "live",
            "batch_order": True,
            "is_last_order": True,
            "canceled_count": 3,
            "failed_count": 0,
        },
        "alice",
    ),
    (
        "close_position_event",
        {"status": "success", "message": "All Open Positions Squared Off", "mode": "live"},
        "alice",
    ),
    (
        "order_update",
        {
            "broker": "zerodha",
            "orderid": "250128000012345",
            "symbol": "RELIANCE",
            "exchange": "NSE",
            "action": "BUY",
            "quantity": 10,
            "price": 2450.55,
            "trigger_price": 0.0,
            "pricetype": "LIMIT",
            "product": "MIS",
            "order_status": "complete",
            "filled_quantity": 10,
            "pending_quantity": 0,
            "average_price": 2450.5,
            "rejection_reason": None,
            "mode": "live",
        },
        "alice",
    ),
    (
        "gtt_event",
        {
            "event": "triggered",
            "symbol": "TCS",
            "exchange": "NSE",
            "trigger_id": "G-17",
            "triggered_order_id": "250128000099999",
            "mode": "live",
        },
        "alice",
    ),
    (
        "master_contract_download",
        {
            "broker": "zerodha",
            "status": "success",
            "message": "Master contract downloaded ✓",
            "symbols_count": 98765,
            "download_time_seconds": 12.25,
        },
        None,
    ),
    (
        "password_change",
        {
            "user": "alice",
            "status": "success",
            "message": "Password changed",
            "ip_address": "127.0.0.1",
            "user_agent": "Mozilla/5.0",
        },
        "alice",
    ),
]
"""One sample of every event of REFERENCE section 2, with each payload variant's extras."""


class ClosingRequestHandler(WSGIRequestHandler):
    """Close each TCP connection after its request, as servers other than Werkzeug do.

    Werkzeug keeps a connection open for another HTTP request after a WebSocket on it ended,
    so a python-socketio client's close waits 3 s for a close that never comes; with that
    wait on every client each test would take seconds longer. Nothing else changes.
    """

    protocol_version = "HTTP/1.0"


def envelope(n: int, event: str, data: dict[str, Any], user_id: str | None = "alice") -> Envelope:
    """An envelope as the forwarder holds it: decoded from the emitter's msgpack frame."""
    sent = Envelope(
        v=1,
        id=f"event-{n}",
        ts=1_769_682_645_000_000_000 + n,
        event=event,
        topic=None,
        user_id=user_id,
        key=user_id or SYSTEM_KEY,
        data=data,
    )
    return decode_envelope(encode_envelope(sent))


def browser_batch(start: int = 0) -> list[Envelope]:
    return [envelope(start + n, e, p, u) for n, (e, p, u) in enumerate(BROWSER_EVENTS)]


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Poll a condition with a generous deadline, so slow shared machines do not fail tests."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


class RelayServer:
    """The subprocess: start, stop (terminate, wait, kill) and start again on the same port."""

    def __init__(
        self,
        secret: str,
        log_path: Path,
        *,
        per_user_rooms: bool = False,
        max_http_buffer_size: int | None = None,
    ) -> None:
        self.secret = secret
        self.log_path = log_path
        self.per_user_rooms = per_user_rooms
        self.max_http_buffer_size = max_http_buffer_size
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        command = [sys.executable, "-m", "tests.support.socketio_server", "--port", str(self.port)]
        if self.per_user_rooms:
            command.append("--per-user-rooms")
        if self.max_http_buffer_size is not None:
            command += ["--max-http-buffer-size", str(self.max_http_buffer_size)]
        with self.log_path.open("ab") as log_file:
            self.process = subprocess.Popen(
                command,
                cwd=ROOT,
                env={**os.environ, SECRET_VARIABLE: self.secret},
                stdout=subprocess.PIPE,
                stderr=log_file,
            )
        self.port = self._read_port(self.process)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _read_port(self, process: subprocess.Popen[bytes]) -> int:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], START_TIMEOUT_S)
        line = process.stdout.readline().decode() if ready else ""
        if not line.startswith("PORT "):
            self.stop()
            raise RuntimeError(f"the Socket.IO server did not start:\n{self.log_text()}")
        return int(line.split()[1])


@contextlib.contextmanager
def relay_server(
    secret: str,
    log_path: Path,
    *,
    per_user_rooms: bool = False,
    max_http_buffer_size: int | None = None,
) -> Iterator[RelayServer]:
    """A started server that is stopped however the test ends."""
    server = RelayServer(
        secret, log_path, per_user_rooms=per_user_rooms, max_http_buffer_size=max_http_buffer_size
    )
    try:
        server.start()
        yield server
    finally:
        server.stop()


class BrowserClient(BrowserTab):
    """The demo's browser tab, failing the test when events do not arrive in time."""

    def wait_for(self, count: int, timeout: float = 30.0) -> list[tuple[str, Any]]:
        """The events once at least `count` arrived; fails after `timeout`."""
        received = super().wait_for(count, timeout)
        if len(received) < count:
            raise AssertionError(f"{len(received)} of {count} browser events within {timeout}s")
        return received


@contextlib.contextmanager
def browser_client(url: str, *, user: str | None = None) -> Iterator[BrowserClient]:
    """A connected browser stand-in that is disconnected however the test ends."""
    browser = BrowserClient(url, user=user)
    try:
        yield browser
    finally:
        browser.close()


@contextlib.contextmanager
def plain_server(
    configure: Callable[[socketio.Server], None],
    *,
    unix_path: Path | None = None,
    ssl_context: Any = None,
) -> Iterator[str]:
    """A plain python-socketio Server behind Werkzeug in a thread of the test process; its URL
    (as SOCKETIO_URL writes it: unix:PATH when listening on the unix socket `unix_path`)."""
    sio = socketio.Server(async_mode="threading")
    configure(sio)
    server = make_server(
        "127.0.0.1" if unix_path is None else f"unix://{unix_path}",
        0,
        socketio.WSGIApp(sio),
        threaded=True,
        request_handler=ClosingRequestHandler,
        ssl_context=ssl_context,
    )
    thread = threading.Thread(target=server.serve_forever, name="plain-socketio-server")
    thread.start()
    scheme = "http" if ssl_context is None else "https"
    try:
        yield (
            f"unix:{unix_path}"
            if unix_path is not None
            else f"{scheme}://127.0.0.1:{server.server_port}"
        )
    finally:
        sio.shutdown()
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()


def _build_app(secret: str, per_user_rooms: bool, max_http_buffer_size: int | None) -> Any:
    """OpenAlgo's Socket.IO options and the relay, plus the page the browser test loads."""
    app = flask.Flask(__name__)
    app.json.sort_keys = False  # the browser test compares key order too
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
    received: dict[int, list[Any]] = {}
    connects: list[bool] = []
    lock = threading.Lock()

    @sio.on("connect")
    def join_user_room(auth: Any = None) -> None:
        if isinstance(auth, dict) and isinstance(auth.get("user"), str):
            flask_socketio.join_room(auth["user"])

    @sio.on("browser_received")
    def record(arrival: int, event: str, payload: Any) -> None:
        with lock:
            received[arrival] = [event, payload]

    @sio.on("browser_ready")
    def ready() -> None:
        with lock:
            connects.append(True)

    @app.get("/browser")
    def page() -> Any:
        return flask.send_file(PAGE, mimetype="text/html")

    @app.get("/socket.io.min.js")
    def bundle() -> Any:
        return flask.send_file(BUNDLE, mimetype="text/javascript")

    @app.get("/browser/received")
    def browser_received() -> Any:
        with lock:
            return flask.jsonify(
                connects=len(connects), received=[received[k] for k in sorted(received)]
            )

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--per-user-rooms", action="store_true")
    parser.add_argument("--max-http-buffer-size", type=int)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
    app = _build_app(os.environ[SECRET_VARIABLE], args.per_user_rooms, args.max_http_buffer_size)
    server = make_server(
        "127.0.0.1", args.port, app, threaded=True, request_handler=ClosingRequestHandler
    )
    print(f"PORT {server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
