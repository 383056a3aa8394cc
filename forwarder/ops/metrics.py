"""Prometheus metrics and health probes over HTTP, so the forwarder can be watched, not just read.

GET /metrics   the counters of the stats snapshot and the batch delivery latency histogram
GET /healthz   200 while the main loop goes round, 503 once it has stalled (liveness)
GET /readyz    200 while every sink delivers within its retry budget, 503 otherwise (readiness)
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator, Mapping
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

__all__ = ["BatchLatency", "MetricsServer"]

log = structlog.get_logger("forwarder.metrics")

PREFIX: Final = "openalgo_forwarder"
LATENCY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 30)
"""From a local Socket.IO relay (about a millisecond) to a Kafka cluster that is failing over."""

_SINK_COUNTERS: Final = (
    ("delivered", "Events the sink acknowledged."),
    ("retried", "Delivery attempts that failed and were tried again."),
    ("dead_lettered", "Events the sink refused for good, kept in the dead-letter file."),
    ("dropped", "Events discarded because the sink's buffer was full."),
    ("batches", "Batches the sink acknowledged."),
)

_COUNTERS: Final = (
    ("events_received", "Frames read from the socket.", "received"),
    ("decode_failures", "Frames that were not valid envelopes.", "decode_failures"),
    (
        "disconnects",
        "Emitter connections that ended (process exit, or a frame over the size limit).",
        "disconnects",
    ),
    (
        "emitters_refused",
        "CURVE handshakes refused (a client key not listed, or a client without CURVE).",
        "emitters_refused",
    ),
    (
        "dead_letters_discarded",
        "Dead letters lost when the rotated dead-letter file was replaced.",
        "dead_letters_discarded",
    ),
)
"""The forwarder-wide counters of the stats snapshot: (metric name, help, snapshot key)."""

Snapshot = Callable[[], Mapping[str, Any]]


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
    """Turns the stats snapshot into metric families at scrape time, so nothing is counted twice."""

    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot()
        for metric, help_text, key in _COUNTERS:
            yield CounterMetricFamily(f"{PREFIX}_{metric}", help_text, value=snap[key])
        yield GaugeMetricFamily(
            f"{PREFIX}_uptime_seconds", "Seconds since the process started.", value=snap["uptime_s"]
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_main_loop_age_seconds",
            "Seconds since the main loop last went round.",
            value=snap["loop_age_s"],
        )
        sinks: Mapping[str, Mapping[str, Any]] = snap["sinks"]
        for key, help_text in _SINK_COUNTERS:
            family = CounterMetricFamily(f"{PREFIX}_sink_{key}", help_text, labels=["sink"])
            for name, sink in sinks.items():
                family.add_metric([name], sink[key])
            yield family
        gauges = (
            ("backlog_events", "Events buffered for the sink, not yet acknowledged.", "queued"),
            (
                "oldest_event_age_seconds",
                "Age of the oldest event buffered for the sink; 0 when none is.",
                "oldest_age_s",
            ),
            (
                "retrying_seconds",
                "Seconds the sink has been failing; 0 while it delivers.",
                "retrying_since_s",
            ),
        )
        for metric, help_text, key in gauges:
            gauge = GaugeMetricFamily(f"{PREFIX}_sink_{metric}", help_text, labels=["sink"])
            for name, sink in sinks.items():
                gauge.add_metric([name], sink[key] or 0)
            yield gauge


class MetricsServer(ThreadedServer):
    """An HTTP server in a daemon thread; its registry is its own, never the process-wide one."""

    thread_name = "metrics-http"

    def __init__(
        self,
        addr: tuple[str, int],
        snapshot: Snapshot,
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
