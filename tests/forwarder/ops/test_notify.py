"""The notify protocol against a real datagram listener, as systemd would hold it."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator

import pytest
from structlog.testing import capture_logs

from forwarder.ops.notify import Notifier


@pytest.fixture
def listener(tmp_path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify.sock")
    sock.bind(path)
    sock.settimeout(5)
    try:
        yield sock, path
    finally:
        sock.close()


@pytest.fixture
def abstract_listener() -> Iterator[tuple[socket.socket, str]]:
    name = f"openalgo-forwarder-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5)
    try:
        yield sock, "@" + name
    finally:
        sock.close()


def received(sock: socket.socket) -> bytes:
    return sock.recv(4096)


class TestNotifier:
    def test_sends_each_state_as_one_datagram(self, listener):
        """ready, status, watchdog and stopping reach the socket as the exact protocol lines."""
        sock, path = listener
        notifier = Notifier.from_env({"NOTIFY_SOCKET": path})
        try:
            notifier.ready("listening on ipc:///run/x.sock")
            notifier.status("kafka: retrying")
            notifier.watchdog()
            notifier.stopping()
            notifier.ready()
        finally:
            notifier.close()
        assert received(sock) == b"READY=1\nSTATUS=listening on ipc:///run/x.sock"
        assert received(sock) == b"STATUS=kafka: retrying"
        assert received(sock) == b"WATCHDOG=1"
        assert received(sock) == b"STOPPING=1"
        assert received(sock) == b"READY=1"

    def test_abstract_socket_name(self, abstract_listener):
        """A NOTIFY_SOCKET starting with @ reaches the abstract socket of that name."""
        sock, address = abstract_listener
        notifier = Notifier.from_env({"NOTIFY_SOCKET": address})
        try:
            notifier.watchdog()
        finally:
            notifier.close()
        assert received(sock) == b"WATCHDOG=1"

    def test_no_socket_is_a_no_op(self):
        """Outside systemd nothing is sent and nothing fails."""
        notifier = Notifier.from_env({})
        notifier.ready("up")
        notifier.watchdog()
        notifier.stopping()
        notifier.close()
        assert notifier.watchdog_interval_s is None

    def test_send_error_is_logged_once_and_not_raised(self, tmp_path):
        """A socket that is gone costs one warning, not an exception per call."""
        missing = str(tmp_path / "gone.sock")
        notifier = Notifier.from_env({"NOTIFY_SOCKET": missing})
        with capture_logs() as logs:
            notifier.ready()
            notifier.watchdog()
            notifier.stopping()
        notifier.close()
        assert [entry["event"] for entry in logs] == ["notify_failed"]
        assert logs[0]["socket"] == missing

    def test_unencodable_status_is_still_sent(self, listener):
        """A status holding an undecodable byte (a surrogate escape) is sent with it replaced."""
        sock, path = listener
        notifier = Notifier(path)
        notifier.status("kafka: \udcff")
        notifier.close()
        assert received(sock) == b"STATUS=kafka: ?"

    def test_sends_again_after_close(self, listener):
        """close releases the socket and a later call opens a new one."""
        sock, path = listener
        notifier = Notifier(path)
        notifier.status("one")
        notifier.close()
        notifier.status("two")
        notifier.close()
        assert received(sock) == b"STATUS=one"
        assert received(sock) == b"STATUS=two"


class TestWatchdogInterval:
    def test_half_of_watchdog_usec(self):
        """Pinging at half of WatchdogSec= leaves a whole half period of slack."""
        notifier = Notifier.from_env({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "30000000"})
        assert notifier.watchdog_interval_s == 15.0

    def test_watchdog_for_this_pid(self):
        """WATCHDOG_PID naming this process keeps the watchdog on."""
        env = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
        assert Notifier.from_env(env).watchdog_interval_s == 1.0

    @pytest.mark.parametrize(
        "env",
        [
            {},
            {"WATCHDOG_USEC": "0"},
            {"WATCHDOG_USEC": "soon"},
            {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"},
        ],
        ids=["unset", "zero", "malformed", "other-process"],
    )
    def test_off(self, env):
        """No usable WATCHDOG_USEC, or one meant for another process, turns the watchdog off."""
        assert Notifier.from_env(env).watchdog_interval_s is None
