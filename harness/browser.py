"""A browser tab's stand-in on the default namespace `/`: it keeps every event, in arrival order.

It speaks Socket.IO (protocol 5 over one WebSocket) itself and reads on one thread, as a browser
does: python-socketio's Client hands each message to a thread of its own, which can reorder them.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

import websocket

from harness.waits import WaitTimeoutError, poll

__all__ = ["BrowserTab", "browser_tab"]

_CONNECT_TIMEOUT_S: Final = 10.0
_CLOSE_TIMEOUT_S: Final = 3.0


class BrowserTab:
    """Connected to `/` like OpenAlgo's pages; `events()` is what it received so far."""

    def __init__(self, url: str, *, user: str | None = None) -> None:
        self._received: list[tuple[str, Any]] = []
        self.arrived_ns: list[int] = []
        """Wall-clock arrival of each event, comparable with an envelope's emit time."""
        self._lock = threading.Lock()
        address = "ws" + url.removeprefix("http") + "/socket.io/?EIO=4&transport=websocket"
        self._ws = websocket.create_connection(address, timeout=_CONNECT_TIMEOUT_S)
        try:
            if not self._receive().startswith("0"):
                raise ConnectionError("no Engine.IO handshake")
            self._ws.send("40" + (json.dumps({"user": user}) if user else ""))
            reply = self._receive()
            if not reply.startswith("40"):
                raise ConnectionError(f"namespace / refused the browser: {reply!r}")
        except BaseException:
            self._ws.close()
            raise
        self._ws.settimeout(None)
        self._reader = threading.Thread(target=self._read, name="browser-tab", daemon=True)
        self._reader.start()

    @property
    def connected(self) -> bool:
        return self._reader.is_alive()

    def events(self) -> list[tuple[str, Any]]:
        """Every (event name, payload) received, first one first."""
        with self._lock:
            return list(self._received)

    def collect(self, count: int, timeout: float = 30.0) -> list[tuple[str, Any]]:
        """The events once `count` arrived, or those that did within `timeout` s."""
        poll(lambda: len(self.events()) >= count, timeout)
        return self.events()

    def wait_for(self, count: int, timeout: float = 30.0) -> list[tuple[str, Any]]:
        """The events once at least `count` arrived; raises WaitTimeoutError after `timeout` s."""
        received = self.collect(count, timeout)
        if len(received) < count:
            raise WaitTimeoutError(f"{len(received)} of {count} browser events within {timeout} s")
        return received

    def close(self) -> None:
        """Leave as a closing tab does."""
        self._ws.close(timeout=_CLOSE_TIMEOUT_S)
        self._reader.join(_CLOSE_TIMEOUT_S)

    def _receive(self) -> str:
        """One frame as text: Engine.IO sends text frames, binary ones only for binary payloads."""
        frame = self._ws.recv()
        return frame.decode(errors="replace") if isinstance(frame, bytes) else frame

    def _read(self) -> None:
        while True:
            try:
                frame = self._receive()
            except (websocket.WebSocketException, OSError):
                return
            if not frame:
                return
            if frame == "2":
                self._ws.send("3")  # Engine.IO ping: answer, or the server drops the tab
            elif frame.startswith("42"):
                event, *args = json.loads(frame[2:])
                with self._lock:
                    self._received.append((event, args[0] if len(args) == 1 else args))
                    self.arrived_ns.append(time.time_ns())


@contextmanager
def browser_tab(url: str, *, user: str | None = None) -> Iterator[BrowserTab]:
    """A connected tab, closed however the caller ends."""
    tab = BrowserTab(url, user=user)
    try:
        yield tab
    finally:
        tab.close()
