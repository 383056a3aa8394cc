"""The fault proxy does what the fault-injection tests rely on: forward, swallow, refuse, delay."""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest

from harness.proxy import FaultProxy, fault_proxy
from harness.waits import wait_until


class Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        with contextlib.suppress(ConnectionError):
            while data := self.request.recv(4096):
                self.request.sendall(data)


@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with fault_proxy(server.server_address[1]) as started:
            yield started
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def connect(proxy: FaultProxy) -> socket.socket:
    return socket.create_connection(("127.0.0.1", proxy.port), timeout=2)


def echo(sock: socket.socket, data: bytes = b"ping") -> bytes:
    sock.sendall(data)
    return sock.recv(4096)


class TestFaultProxy:
    def test_forwards_both_ways(self, proxy):
        with connect(proxy) as sock:
            assert echo(sock) == b"ping"

    def test_a_black_hole_keeps_the_connection_open_and_silent(self, proxy):
        """The client's writes succeed and no answer ever comes, as on a cut link."""
        with connect(proxy) as sock:
            proxy.blackhole()
            sock.sendall(b"lost")
            sock.settimeout(0.5)
            with pytest.raises(TimeoutError):
                sock.recv(4096)

    def test_healing_resets_what_the_black_hole_broke_and_serves_new_connections(self, proxy):
        with connect(proxy) as broken:
            proxy.blackhole()
            broken.sendall(b"lost")
            wait_until(proxy.swallowed, what="the black hole to swallow the bytes")
            proxy.heal()
            with pytest.raises(ConnectionResetError):
                broken.recv(4096)
        with connect(proxy) as sock:
            assert echo(sock) == b"ping"

    def test_refuse_resets_open_connections_and_new_ones(self, proxy):
        with connect(proxy) as open_before:
            assert echo(open_before) == b"ping"
            proxy.refuse()
            with pytest.raises(ConnectionResetError):
                open_before.recv(4096)
        with pytest.raises(ConnectionResetError), connect(proxy) as refused:
            refused.recv(4096)

    def test_delay_holds_each_chunk(self, proxy):
        with connect(proxy) as sock:
            proxy.delay(0.2)
            started = time.monotonic()
            assert echo(sock) == b"ping"
            assert time.monotonic() - started >= 0.4
