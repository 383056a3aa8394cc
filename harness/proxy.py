"""A TCP proxy on loopback whose faults a caller switches on and off: black hole, refuse, delay.

It sits between the forwarder and a server (the broker, the Socket.IO app) so a test can take the
network away without stopping the server, and give it back at a moment of its choosing.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Iterator
from enum import Enum
from types import TracebackType

__all__ = ["FaultProxy", "Mode", "fault_proxy"]

_CHUNK = 65536
_POLL_S = 0.05


class Mode(Enum):
    FORWARD = "forward"
    BLACKHOLE = "blackhole"
    """Connections stay open and silent: bytes either way are swallowed, as on a cut link."""
    REFUSE = "refuse"
    """New connections are reset at once, as by a host where nothing listens."""


def _reset(sock: socket.socket) -> None:
    """Close with an RST rather than a FIN, as a crashed peer or a middlebox does."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RD)  # wakes a pump blocked in recv() without sending a FIN
    with contextlib.suppress(OSError):
        sock.close()


class _Link:
    """One client connection and its upstream twin, pumped by two threads."""

    def __init__(self, proxy: FaultProxy, client: socket.socket, upstream: socket.socket) -> None:
        self._proxy = proxy
        self.client = client
        self.upstream = upstream
        self.tainted = False
        """Bytes were swallowed: the stream is broken, so healing resets it."""
        self.closed = threading.Event()
        self._threads = [
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True),
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True),
        ]

    def start(self) -> None:
        """Pump both ways; called once the proxy knows the link, so a reset cannot miss it."""
        for thread in self._threads:
            thread.start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while not self.closed.is_set():
                data = source.recv(_CHUNK)
                if not data:
                    break
                if self._proxy.mode is Mode.BLACKHOLE:
                    self.tainted = True
                    continue
                if self._proxy.delay_s:
                    time.sleep(self._proxy.delay_s)
                target.sendall(data)
        except OSError:
            pass
        self.reset()

    def reset(self) -> None:
        if not self.closed.is_set():
            self.closed.set()
            _reset(self.client)
            _reset(self.upstream)

    def join(self) -> None:
        for thread in self._threads:
            if thread.ident is not None and thread is not threading.current_thread():
                thread.join(5)


class FaultProxy:
    """Listens on 127.0.0.1 and forwards each connection to `target` unless told otherwise."""

    def __init__(self, target_port: int, *, port: int = 0, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.mode = Mode.FORWARD
        self.delay_s = 0.0
        self.accepted = 0
        self._listener = socket.create_server(("127.0.0.1", port))
        self._listener.settimeout(_POLL_S)
        self.port: int = self._listener.getsockname()[1]
        self._links: list[_Link] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._acceptor = threading.Thread(target=self._accept, name="fault-proxy", daemon=True)
        self._acceptor.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def blackhole(self) -> None:
        """Swallow everything from now on, keeping connections open: nothing errors, all waits."""
        self.mode = Mode.BLACKHOLE

    def refuse(self) -> None:
        """Reset open connections and every new one, as a server that went away."""
        self.mode = Mode.REFUSE
        self.reset()

    def delay(self, seconds: float) -> None:
        """Hold each chunk this long before passing it on."""
        self.delay_s = seconds

    def swallowed(self) -> bool:
        """Whether the black hole has swallowed bytes of a connection still open."""
        with self._lock:
            return any(link.tainted and not link.closed.is_set() for link in self._links)

    def heal(self) -> None:
        """Forward again; connections whose bytes were swallowed are reset, as TCP would."""
        self.mode = Mode.FORWARD
        self.delay_s = 0.0
        with self._lock:
            tainted = [link for link in self._links if link.tainted]
        for link in tainted:
            link.reset()

    def reset(self) -> None:
        """Reset every open connection now; new ones are served per the mode."""
        with self._lock:
            links, self._links = self._links, []
        for link in links:
            link.reset()
        for link in links:
            link.join()

    def close(self) -> None:
        self._closing.set()
        self._acceptor.join(5)
        self._listener.close()
        self.reset()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            client.settimeout(None)
            if self.mode is Mode.REFUSE:
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _reset(client)
                continue
            upstream.settimeout(None)
            link = _Link(self, client, upstream)
            if self.mode is Mode.BLACKHOLE:
                link.tainted = True
            with self._lock:
                self._links = [known for known in self._links if not known.closed.is_set()]
                self._links.append(link)
            link.start()


@contextlib.contextmanager
def fault_proxy(target_port: int, *, port: int = 0) -> Iterator[FaultProxy]:
    """A started proxy that is closed, with all its connections, however the test ends."""
    proxy = FaultProxy(target_port, port=port)
    try:
        yield proxy
    finally:
        proxy.close()
