"""A plain python-socketio Server (no Flask) in a thread of the test process."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import socketio
from werkzeug.serving import make_server

from harness.relay_app import ClosingRequestHandler


@contextmanager
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
