"""What an operator sees of a running forwarder: systemd notifications, `stats`, metrics."""

from __future__ import annotations

import json
import signal
import socket
import time
import urllib.request

import pytest

from harness.broker import unique_topic
from harness.forwarder import ForwarderProcess, forwarder_env, run_cli, running_forwarders
from harness.net import free_port
from tests.support.frames import push_envelopes

pytestmark = pytest.mark.integration  # the forwarder runs as a subprocess against the broker


@pytest.fixture
def notify_socket(tmp_path):
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify.sock"
    listener.bind(str(path))
    listener.settimeout(0.2)
    try:
        yield listener, path
    finally:
        listener.close()


def datagrams_until(listener: socket.socket, wanted: str, timeout: float = 20) -> list[str]:
    received: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            received.append(listener.recv(4096).decode())
        except TimeoutError:
            continue
        if any(wanted in message for message in received):
            return received
    pytest.fail(f"no {wanted!r} datagram within {timeout} s; received {received}")


def http_get(port: int, path: str) -> tuple[int, str]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


class TestRunningForwarder:
    def test_notify_stats_and_metrics_report_the_same_deliveries(
        self, tmp_path, kafka_bootstrap, notify_socket
    ):
        """READY, watchdog pings and STOPPING reach systemd; stats and metrics count what flowed."""
        listener, notify_path = notify_socket
        metrics_port = free_port()
        env = forwarder_env(
            tmp_path,
            ORDER_EVENT_MODE="KAFKA",
            KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
            KAFKA_ORDER_EVENTS_TOPIC=unique_topic(),
            FORWARDER_METRICS_ADDR=f"127.0.0.1:{metrics_port}",
            NOTIFY_SOCKET=str(notify_path),
            WATCHDOG_USEC="1000000",
        )
        with running_forwarders() as started:
            forwarder = ForwarderProcess(env).start()
            started.append(forwarder)
            ready = datagrams_until(listener, "READY=1")
            assert any("STATUS=received 0" in message for message in ready)

            push_envelopes(env["FORWARDER_ENDPOINT"], "ops", 5)
            forwarder.wait_for_log("batch_delivered", timeout=60)
            deadline = time.monotonic() + 30
            while True:
                result = run_cli("stats", "--json", env=env)
                assert result.returncode == 0, result.stderr
                snapshot = json.loads(result.stdout)
                if snapshot["sinks"]["kafka"]["delivered"] == 5 or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert snapshot["received"] == 5
            assert snapshot["sinks"]["kafka"]["delivered"] == 5
            assert snapshot["pid"] == forwarder.pid

            table = run_cli("stats", env=env)
            assert table.returncode == 0
            assert "kafka" in table.stdout

            assert "WATCHDOG=1" in datagrams_until(listener, "WATCHDOG=1")
            assert (
                "openalgo_forwarder_events_received_total 5.0"
                in http_get(metrics_port, "/metrics")[1]
            )
            status, body = http_get(metrics_port, "/metrics")
            assert status == 200
            assert 'openalgo_forwarder_sink_delivered_total{sink="kafka"} 5.0' in body
            assert http_get(metrics_port, "/healthz")[0] == 200
            assert http_get(metrics_port, "/readyz")[0] == 200

            forwarder.send_signal(signal.SIGTERM)
            assert forwarder.wait() == 0
            assert "STOPPING=1" in "".join(datagrams_until(listener, "STOPPING=1", timeout=5))

    def test_stats_without_a_running_forwarder_says_so(self, tmp_path):
        """`stats` exits 1 with a readable message when nothing listens on the control socket."""
        env = forwarder_env(tmp_path, ORDER_EVENT_MODE="KAFKA")
        result = run_cli("stats", env=env)
        assert result.returncode == 1
        assert "openalgo-forwarder:" in result.stderr
        assert "Traceback" not in result.stderr
