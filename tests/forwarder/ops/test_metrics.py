"""The metrics server answered over real HTTP on a free loopback port."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator

import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

from forwarder.errors import ForwarderError
from forwarder.ops.metrics import BatchLatency, MetricsServer
from forwarder.stats import Snapshot
from tests.support.snapshots import sink_snapshot, snapshot

DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
"""Loopback requests must never go through a proxy set in the environment."""


class Source:
    """A snapshot the test changes between requests, as the running service would."""

    def __init__(self) -> None:
        self.current: Snapshot = snapshot()
        self.error: Exception | None = None

    def __call__(self) -> Snapshot:
        if self.error is not None:
            raise self.error
        return self.current


@pytest.fixture(scope="module")
def shared_source() -> Source:
    return Source()


@pytest.fixture
def source(shared_source) -> Source:
    shared_source.current = snapshot()
    shared_source.error = None
    return shared_source


@pytest.fixture(scope="module")
def shared_server(shared_source) -> Iterator[MetricsServer]:
    metrics = MetricsServer(("127.0.0.1", 0), shared_source)
    metrics.start()
    try:
        yield metrics
    finally:
        metrics.close()


@pytest.fixture
def server(shared_server, source) -> MetricsServer:
    """One server for the module, as closing one takes up to half a second; data reset per test."""
    return shared_server


def get(server: MetricsServer, path: str, accept: str = "*/*") -> tuple[int, str, str]:
    host, port = server.address
    host = f"[{host}]" if ":" in host else host
    try:
        request = urllib.request.Request(f"http://{host}:{port}{path}", headers={"Accept": accept})
        with DIRECT.open(request, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers["Content-Type"], error.read().decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


class TestMetricsEndpoint:
    def test_exposes_the_snapshot(self, server):
        """Events received, decode failures and every per-sink counter and gauge are exported."""
        status, content_type, body = get(server, "/metrics")
        assert status == 200
        assert content_type.startswith("text/plain")
        values = samples(body)
        kafka = (("sink", "kafka"),)
        socketio = (("sink", "socketio"),)
        assert values["openalgo_forwarder_events_received_total", ()] == 1500
        assert values["openalgo_forwarder_decode_failures_total", ()] == 2
        assert values["openalgo_forwarder_disconnects_total", ()] == 3
        assert values["openalgo_forwarder_emitters_refused_total", ()] == 1
        assert values["openalgo_forwarder_dead_letters_discarded_total", ()] == 0
        assert values["openalgo_forwarder_uptime_seconds", ()] == 3723.5
        assert values["openalgo_forwarder_main_loop_age_seconds", ()] == 0.2
        assert values["openalgo_forwarder_sink_delivered_total", kafka] == 1400
        assert values["openalgo_forwarder_sink_delivered_total", socketio] == 1500
        assert values["openalgo_forwarder_sink_retried_total", kafka] == 3
        assert values["openalgo_forwarder_sink_dead_lettered_total", kafka] == 0
        assert values["openalgo_forwarder_sink_dropped_total", kafka] == 0
        assert values["openalgo_forwarder_sink_batches_total", socketio] == 9
        assert values["openalgo_forwarder_sink_waiting_events", kafka] == 100
        assert values["openalgo_forwarder_sink_oldest_event_age_seconds", kafka] == 1.5
        assert values["openalgo_forwarder_sink_oldest_event_age_seconds", socketio] == 0
        assert values["openalgo_forwarder_sink_retrying_seconds", kafka] == 0

    def test_reads_the_snapshot_at_each_scrape(self, server, source):
        """A later scrape sees the counters as they are then, not as they were."""
        get(server, "/metrics")
        source.current = snapshot(
            received=2000,
            sinks={"kafka": sink_snapshot(dead_lettered=4, dropped=5, retrying_since_s=12.5)},
        )
        values = samples(get(server, "/metrics")[2])
        kafka = (("sink", "kafka"),)
        assert values["openalgo_forwarder_events_received_total", ()] == 2000
        assert values["openalgo_forwarder_sink_dead_lettered_total", kafka] == 4
        assert values["openalgo_forwarder_sink_dropped_total", kafka] == 5
        assert values["openalgo_forwarder_sink_retrying_seconds", kafka] == 12.5
        assert ("openalgo_forwarder_sink_delivered_total", (("sink", "socketio"),)) not in values

    def test_batch_latency_histogram(self, server):
        """Each observed batch is counted in its sink's histogram."""
        server.latency.observe("kafka", 0.004)
        server.latency.observe("kafka", 0.2)
        server.latency.observe("socketio", 0.001)
        values = samples(get(server, "/metrics")[2])
        kafka = (("sink", "kafka"),)
        assert values["openalgo_forwarder_batch_delivery_seconds_count", kafka] == 2
        assert values["openalgo_forwarder_batch_delivery_seconds_sum", kafka] == pytest.approx(
            0.204
        )
        le_5ms = (("le", "0.005"), ("sink", "kafka"))
        assert values["openalgo_forwarder_batch_delivery_seconds_bucket", le_5ms] == 1
        assert (
            values["openalgo_forwarder_batch_delivery_seconds_count", (("sink", "socketio"),)] == 1
        )

    def test_openmetrics_when_asked(self, server):
        """A scraper that asks for OpenMetrics gets it."""
        status, content_type, body = get(server, "/metrics", accept="application/openmetrics-text")
        assert status == 200
        assert content_type.startswith("application/openmetrics-text")
        assert body.endswith("# EOF\n")

    def test_own_registry(self, server):
        """Nothing is added to prometheus_client's process-wide registry."""
        names = {family.name for family in prometheus_client.REGISTRY.collect()}
        assert not any(name.startswith("openalgo_forwarder") for name in names)

    def test_failing_snapshot_answers_500(self, server, source):
        """A snapshot that raises gives a 500, and the server keeps answering afterwards."""
        source.error = RuntimeError("boom")
        assert get(server, "/metrics")[0] == 500
        assert get(server, "/healthz")[0] == 500
        source.error = None
        assert get(server, "/metrics")[0] == 200

    def test_unknown_path(self, server):
        """Any other path is a 404 that lists the real ones."""
        status, _, body = get(server, "/")
        assert status == 404
        assert "/metrics" in body


class TestProbes:
    def test_healthz(self, server, source):
        """/healthz is 200 while the loop goes round and 503 once it has stalled."""
        status, _, body = get(server, "/healthz")
        assert (status, body) == (200, "ok: main loop went round 0.2 s ago\n")
        source.current = snapshot(loop_age_s=42.0)
        status, _, body = get(server, "/healthz")
        assert status == 503
        assert body.startswith("stalled: main loop stalled for 42.0 s")

    def test_readyz(self, server, source):
        """/readyz is 200 while every sink delivers, 503 with the reason once one is over budget."""
        status, content_type, body = get(server, "/readyz")
        assert (status, content_type) == (200, "application/json")
        assert json.loads(body) == {
            "ready": True,
            "sinks": {"kafka": "delivering", "socketio": "delivering"},
        }
        source.current = snapshot(
            sinks={
                "kafka": sink_snapshot(retrying_since_s=90.0, last_error="NoBrokersAvailable"),
                "socketio": sink_snapshot(retrying_since_s=3.0, last_error="disconnected"),
            }
        )
        status, _, body = get(server, "/readyz")
        assert status == 503
        document = json.loads(body)
        assert document["ready"] is False
        assert document["sinks"]["kafka"] == (
            "failing for 90.0 s, over the 60 s budget: NoBrokersAvailable"
        )
        assert document["sinks"]["socketio"] == "retrying for 3.0 s, within 60 s"


class TestLifecycle:
    def test_close_frees_the_port(self, source):
        """After close the port accepts no connection, and a restarted server can take it again."""
        metrics = MetricsServer(("127.0.0.1", 0), source)
        assert metrics.address == ("127.0.0.1", 0)
        metrics.start()
        port = metrics.address[1]
        assert port != 0
        assert get(metrics, "/healthz")[0] == 200
        metrics.close()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        with MetricsServer(("127.0.0.1", port), source) as again:
            assert get(again, "/healthz")[0] == 200

    def test_ipv6_loopback(self, source):
        """An IPv6 address is served over IPv6."""
        with MetricsServer(("::1", 0), source) as metrics:
            assert metrics.address[0] == "::1"
            assert get(metrics, "/healthz")[0] == 200

    def test_port_taken(self, source):
        """A port already in use stops start with the address in the message."""
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            metrics = MetricsServer(("127.0.0.1", port), source)
            with pytest.raises(ForwarderError, match=f"127.0.0.1:{port}"):
                metrics.start()
            metrics.close()

    def test_latency_can_be_shared(self, source):
        """A BatchLatency made before the server is the one the server exports."""
        latency = BatchLatency()
        latency.observe("kafka", 0.01)
        with MetricsServer(("127.0.0.1", 0), source, latency=latency) as metrics:
            values = samples(get(metrics, "/metrics")[2])
        assert values["openalgo_forwarder_batch_delivery_seconds_count", (("sink", "kafka"),)] == 1
