"""A proxy that makes the embedded broker accept the SASL handshake, so clients send credentials.

tansu answers SaslHandshake with UnsupportedSaslMechanism, and a client then never sends its
SaslAuthenticate request (the one that carries the password). This proxy parses Kafka's framing
(4-byte size, then for requests api_key, api_version, correlation_id), turns the error code of
each SaslHandshake response into 0, and records which requests the client sent: the test sees
that the password really went over the wire.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["SASL_AUTHENTICATE", "SaslProxy", "sasl_proxy"]

SASL_HANDSHAKE = 17
SASL_AUTHENTICATE = 36


class SaslProxy:
    """Listens on a loopback port; every connection is relayed to the broker frame by frame."""

    def __init__(self, upstream_port: int) -> None:
        self._upstream = ("127.0.0.1", upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.api_keys: list[int] = []
        """The api_key of every request clients sent, in order."""
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in [self._accepting, *self._threads]:
            thread.join(5)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self._upstream)
            handshakes: set[int] = set()
            threads = [
                threading.Thread(target=self._requests, args=(client, upstream, handshakes)),
                threading.Thread(target=self._responses, args=(upstream, client, handshakes)),
            ]
            with self._lock:
                self._sockets += [client, upstream]
                self._threads += threads
            for thread in threads:
                thread.daemon = True
                thread.start()

    def _requests(self, source: socket.socket, target: socket.socket, handshakes: set[int]) -> None:
        for frame in _frames(source):
            api_key, _, correlation_id = struct.unpack(">hhi", frame[4:12])
            with self._lock:
                self.api_keys.append(api_key)
            if api_key == SASL_HANDSHAKE:
                handshakes.add(correlation_id)
            if not _send(target, frame):
                return

    def _responses(
        self, source: socket.socket, target: socket.socket, handshakes: set[int]
    ) -> None:
        for frame in _frames(source):
            (correlation_id,) = struct.unpack(">i", frame[4:8])
            accepted = frame
            if correlation_id in handshakes:  # SaslHandshake v0/v1: error_code right after it
                accepted = frame[:8] + b"\x00\x00" + frame[10:]
            if not _send(target, accepted):
                return


def _frames(sock: socket.socket) -> Iterator[bytes]:
    """Each size-prefixed frame, size included, until the connection ends."""
    buffer = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except OSError:
            return
        if not chunk:
            return
        buffer += chunk
        while len(buffer) >= 4:
            (size,) = struct.unpack(">i", buffer[:4])
            if len(buffer) < 4 + size:
                break
            yield buffer[: 4 + size]
            buffer = buffer[4 + size :]


def _send(sock: socket.socket, data: bytes) -> bool:
    try:
        sock.sendall(data)
    except OSError:
        return False
    return True


@contextmanager
def sasl_proxy(upstream_port: int) -> Iterator[SaslProxy]:
    proxy = SaslProxy(upstream_port)
    try:
        yield proxy
    finally:
        proxy.close()
