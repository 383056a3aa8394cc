"""Prometheus metrics and health probes over HTTP, so the forwarder can be watched, not just read.

GET /metrics   the counters of the stats snapshot and the batch delivery latency histogram
GET /healthz   200 while the main loop goes round, 503 once it has stalled (liveness)
GET /readyz    200 while every sink delivers within its retry budget, 503 otherwise (readiness)
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final, cast

import structlog
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from forwarder.errors import ForwarderError
from forwarder.ops import health
from forwarder.ops._threaded import ThreadedServer
from forwarder.stats import Metric as SnapshotMetric
from forwarder.stats import Snapshot, metrics

__all__ = ["BatchLatency", "MetricsServer"]

log = structlog.get_logger("forwarder.metrics")

PREFIX: Final = "openalgo_forwarder"
LATENCY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 30)
"""From a local Socket.IO relay (about a millisecond) to a Kafka cluster that is failing over."""

Snapshots = Callable[[], Snapshot]


class BatchLatency:
    """How long each sink took to acknowledge a batch; the worker observes, /metrics reports."""

    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self._histogram = Histogram(
            f"{PREFIX}_batch_delivery_seconds",
            "Time from sending a batch to its acknowledgement by the sink.",
            ["sink"],
            registry=None,
            buckets=buckets,
        )

    def observe(self, sink: str, seconds: float) -> None:
        """Record one acknowledged batch."""
        self._histogram.labels(sink=sink).observe(seconds)

    def collect(self) -> Iterator[Metric]:
        """The histogram's samples, for the registry of whichever server exposes them."""
        yield from self._histogram.collect()


class _StatsCollector:
    """Turns the stats snapshot into metric families at scrape time, so nothing is counted twice;
    which fields are exported, and as what, the snapshot's own fields say."""

    def __init__(self, snapshot: Snapshots) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot()
        for metric, value in metrics(snap):
            yield _family(metric, f"{PREFIX}_{metric.name}", value=value or 0)
        families: dict[str, CounterMetricFamily | GaugeMetricFamily] = {}
        for name, sink in snap.sinks.items():
            for metric, value in metrics(sink):
                family = families.get(metric.name)
                if family is None:
                    family = _family(metric, f"{PREFIX}_sink_{metric.name}", labels=["sink"])
                    families[metric.name] = family
                family.add_metric([name], value or 0)
        yield from families.values()


def _family(
    metric: SnapshotMetric, name: str, **kwargs: Any
) -> CounterMetricFamily | GaugeMetricFamily:
    family = CounterMetricFamily if metric.kind == "counter" else GaugeMetricFamily
    return family(name, metric.help, **kwargs)


class MetricsServer(ThreadedServer):
    """An HTTP server in a daemon thread; its registry is its own, never the process-wide one."""

    thread_name = "metrics-http"

    def __init__(
        self,
        addr: tuple[str, int],
        snapshot: Snapshots,
        latency: BatchLatency | None = None,
    ) -> None:
        super().__init__()
        self.requested = addr
        self.snapshot = snapshot
        self.latency = BatchLatency() if latency is None else latency
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_StatsCollector(snapshot))
        self.registry.register(self.latency)

    @property
    def address(self) -> tuple[str, int]:
        """Where it listens: the port the system chose when 0 was asked for."""
        if self._server is None:
            return self.requested
        host, port = cast(_Server, self._server).server_address[:2]
        return cast(str, host), port

    def _bind(self) -> _Server:
        try:
            return _Server(self.requested, self)
        except OSError as exc:
            host, port = self.requested
            raise ForwarderError(f"cannot serve metrics on {host}:{port}: {exc}") from exc

    def start(self) -> None:
        """Bind and serve; a port already taken stops the forwarder at start, not later."""
        super().start()
        log.info("metrics_serving", host=self.address[0], port=self.address[1])


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, addr: tuple[str, int], app: MetricsServer) -> None:
        self.address_family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
        self.app = app
        super().__init__(addr, _Handler)


class _Handler(BaseHTTPRequestHandler):
    timeout = 10
    server: _Server

    def do_GET(self) -> None:
        """Route the three endpoints; a failing snapshot answers 500, never kills the thread."""
        app = self.server.app
        path = self.path.split("?", 1)[0]
        try:
            if path == "/metrics":
                encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
                self._reply(HTTPStatus.OK, encoder(app.registry), content_type)
            elif path == "/healthz":
                alive, reason = health.live(app.snapshot())
                status = HTTPStatus.OK if alive else HTTPStatus.SERVICE_UNAVAILABLE
                self._reply(status, f"{'ok' if alive else 'stalled'}: {reason}\n".encode())
            elif path == "/readyz":
                ready, sinks = health.ready(app.snapshot())
                body = json.dumps({"ready": ready, "sinks": sinks}).encode()
                status = HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE
                self._reply(status, body, "application/json")
            else:
                self._reply(HTTPStatus.NOT_FOUND, b"not found: try /metrics, /healthz or /readyz\n")
        except Exception as exc:
            log.error("metrics_request_failed", path=path, error=repr(exc))
            self._reply(HTTPStatus.INTERNAL_SERVER_ERROR, b"stats snapshot failed\n")

    def _reply(
        self, status: HTTPStatus, body: bytes, content_type: str = "text/plain; charset=utf-8"
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every few seconds would flood the journal at INFO: keep them at DEBUG."""
        log.debug("metrics_request", client=self.client_address[0], request=format % args)
