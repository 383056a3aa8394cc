"""Counters of what the forwarder did: plain integers, so the hot path pays almost nothing."""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

__all__ = ["Metric", "SinkCounters", "SinkSnapshot", "Snapshot", "Stats", "metrics"]


@dataclass(frozen=True, slots=True)
class Metric:
    """How a snapshot field is exported to Prometheus: kind, name (after the prefix) and help."""

    kind: Literal["counter", "gauge"]
    name: str
    help: str


def _metric(kind: Literal["counter", "gauge"], name: str, help_text: str) -> Mapping[str, Metric]:
    return {"metric": Metric(kind, name, help_text)}


@dataclass(frozen=True, slots=True)
class SinkSnapshot:
    """One sink's counters at one moment, and how many events wait for it."""

    configured: bool
    """False for a sink taken out of ORDER_EVENT_MODE whose events the buffer still keeps."""
    delivered: int = field(
        metadata=_metric("counter", "delivered", "Events the sink acknowledged.")
    )
    retried: int = field(
        metadata=_metric(
            "counter", "retried", "Delivery attempts that failed and were tried again."
        )
    )
    dead_lettered: int = field(
        metadata=_metric(
            "counter",
            "dead_lettered",
            "Events the sink refused for good, kept in the dead-letter file.",
        )
    )
    dropped: int = field(
        metadata=_metric(
            "counter", "dropped", "Events discarded because the sink's buffer was full."
        )
    )
    waiting: int = field(
        metadata=_metric(
            "gauge", "waiting_events", "Events waiting for the sink: received, not yet finished."
        )
    )
    batches: int = field(metadata=_metric("counter", "batches", "Batches the sink acknowledged."))
    oldest_age_s: float | None = field(
        metadata=_metric(
            "gauge",
            "oldest_event_age_seconds",
            "Age of the oldest event waiting for the sink; 0 when none is.",
        )
    )
    retrying_since_s: float | None = field(
        metadata=_metric(
            "gauge", "retrying_seconds", "Seconds the sink has been failing; 0 while it delivers."
        )
    )
    last_error: str | None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The forwarder's counters at one moment: `stats`, the stats log line, the control socket
    and /metrics all render this."""

    pid: int
    uptime_s: float = field(
        metadata=_metric("gauge", "uptime_seconds", "Seconds since the process started.")
    )
    loop_age_s: float = field(
        metadata=_metric(
            "gauge", "main_loop_age_seconds", "Seconds since the main loop last went round."
        )
    )
    received: int = field(
        metadata=_metric("counter", "events_received", "Frames read from the socket.")
    )
    decode_failures: int = field(
        metadata=_metric("counter", "decode_failures", "Frames that were not valid envelopes.")
    )
    dead_letter_write_failures: int
    buffer_damaged: int
    disconnects: int = field(
        metadata=_metric(
            "counter",
            "disconnects",
            "Emitter connections that ended (process exit, or a frame over the size limit).",
        )
    )
    emitters_refused: int = field(
        metadata=_metric(
            "counter",
            "emitters_refused",
            "CURVE handshakes refused (a client key not listed, or a client without CURVE).",
        )
    )
    dead_letters_discarded: int = field(
        metadata=_metric(
            "counter",
            "dead_letters_discarded",
            "Dead letters lost when the rotated dead-letter file was replaced.",
        )
    )
    sinks: Mapping[str, SinkSnapshot]

    def as_dict(self) -> dict[str, Any]:
        """Plain values, for JSON and the stats log line."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, document: object) -> Snapshot:
        """Read back what `as_dict` wrote; msgspec.ValidationError when it is not that."""
        return msgspec.convert(document, cls)


def metrics(snapshot: Snapshot | SinkSnapshot) -> Iterator[tuple[Metric, float | None]]:
    """Each exported field of a Snapshot or a SinkSnapshot with its value."""
    for item in dataclasses.fields(snapshot):
        metric = item.metadata.get("metric")
        if metric is not None:
            yield metric, getattr(snapshot, item.name)


@dataclass
class SinkCounters:
    """One sink's counters: `dropped` is written by the receiving thread, the rest by its worker."""

    waiting: Callable[[], int] = field(default=lambda: 0, repr=False, compare=False)
    oldest_age_s: Callable[[], float | None] = field(
        default=lambda: None, repr=False, compare=False
    )
    delivered: int = 0
    retried: int = 0
    dead_lettered: int = 0
    dropped: int = 0
    batches: int = 0
    retrying_since: float | None = None
    """Monotonic time of the first failed attempt of the batch still being retried."""
    last_error: str | None = None
    configured: bool = True
    """False for a sink taken out of ORDER_EVENT_MODE whose events the buffer still keeps."""

    def snapshot(self) -> SinkSnapshot:
        """The counters and how many events wait for this sink right now."""
        return SinkSnapshot(
            configured=self.configured,
            delivered=self.delivered,
            retried=self.retried,
            dead_lettered=self.dead_lettered,
            dropped=self.dropped,
            waiting=self.waiting(),
            batches=self.batches,
            oldest_age_s=self.oldest_age_s(),
            retrying_since_s=None
            if self.retrying_since is None
            else round(time.monotonic() - self.retrying_since, 3),
            last_error=self.last_error,
        )


@dataclass
class Stats:
    """Everything the stats line reports; each counter has one writer, so no lock is needed,
    except `buffer_damaged`, which every sink's worker adds to through `count_damage`."""

    received: int = 0
    decode_failures: int = 0
    dead_letter_write_failures: int = 0
    buffer_damaged: int = 0
    """Buffer files set aside and stored rows dead-lettered because they no longer read."""
    disconnects: int = 0
    """Emitter connections that ended: a process exiting, or ZeroMQ dropping one that sent a
    frame over FORWARDER_MAX_FRAME_BYTES (ZeroMQ does not say which)."""
    emitters_refused: int = 0
    """CURVE handshakes refused: a key not in FORWARDER_CURVE_CLIENTS_FILE, or no CURVE at all."""
    dead_letters_discarded: int = 0
    """Dead letters lost when a full dead-letter file replaced the rotated one."""
    sinks: dict[str, SinkCounters] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    loop_at: float = field(default_factory=time.monotonic)
    """When the main loop last went round: what the watchdog and /healthz judge liveness by."""
    _damage_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add_sink(
        self,
        name: str,
        waiting: Callable[[], int],
        oldest_age_s: Callable[[], float | None] = lambda: None,
        *,
        configured: bool = True,
    ) -> SinkCounters:
        """Counters for a new sink; names must be unique so log lines can tell sinks apart."""
        if name in self.sinks:
            raise ValueError(f"two sinks are named {name!r}")
        counters = SinkCounters(waiting=waiting, oldest_age_s=oldest_age_s, configured=configured)
        self.sinks[name] = counters
        return counters

    def count_damage(self, count: int) -> None:
        """Buffer files set aside or stored rows unreadable; safe from any thread."""
        with self._damage_lock:
            self.buffer_damaged += count

    def snapshot(self) -> Snapshot:
        """The counters now, for every report."""
        now = time.monotonic()
        return Snapshot(
            pid=os.getpid(),
            uptime_s=round(now - self.started, 3),
            loop_age_s=round(now - self.loop_at, 3),
            received=self.received,
            decode_failures=self.decode_failures,
            dead_letter_write_failures=self.dead_letter_write_failures,
            buffer_damaged=self.buffer_damaged,
            disconnects=self.disconnects,
            emitters_refused=self.emitters_refused,
            dead_letters_discarded=self.dead_letters_discarded,
            sinks={name: counters.snapshot() for name, counters in self.sinks.items()},
        )
