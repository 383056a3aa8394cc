"""The lifecycle both local servers share: bind at start, serve from a daemon thread, close once."""

from __future__ import annotations

import socketserver
import threading
from typing import ClassVar, Self

__all__ = ["ThreadedServer"]


class ThreadedServer:
    """A socketserver run from a daemon thread; a subclass binds it and tidies up after it."""

    thread_name: ClassVar[str]

    def __init__(self) -> None:
        self._server: socketserver.BaseServer | None = None
        self._thread: threading.Thread | None = None

    def _bind(self) -> socketserver.BaseServer:
        """The bound server; an error here stops the forwarder at start, not later."""
        raise NotImplementedError  # pragma: no cover

    def _closed(self) -> None:
        """Called once the server has stopped and released its socket."""

    def start(self) -> None:
        """Bind, then serve from a daemon thread."""
        self._server = self._bind()
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=self.thread_name, daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        """Stop serving and wait for the thread, so the socket is free when this returns."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._server = None
        self._thread = None
        self._closed()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
