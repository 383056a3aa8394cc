"""Counters of what the forwarder did: plain integers, so the hot path pays almost nothing."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["SinkCounters", "Stats"]


@dataclass
class SinkCounters:
    """One sink's counters: `dropped` is written by the receiving thread, the rest by its worker."""

    depth: Callable[[], int] = field(default=lambda: 0, repr=False, compare=False)
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

    def snapshot(self) -> dict[str, Any]:
        """The counters and how many events wait for this sink right now."""
        return {
            "configured": self.configured,
            "delivered": self.delivered,
            "retried": self.retried,
            "dead_lettered": self.dead_lettered,
            "dropped": self.dropped,
            "queued": self.depth(),
            "batches": self.batches,
            "oldest_age_s": self.oldest_age_s(),
            "retrying_since_s": None
            if self.retrying_since is None
            else round(time.monotonic() - self.retrying_since, 3),
            "last_error": self.last_error,
        }


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
        depth: Callable[[], int],
        oldest_age_s: Callable[[], float | None] = lambda: None,
        *,
        configured: bool = True,
    ) -> SinkCounters:
        """Counters for a new sink; names must be unique so log lines can tell sinks apart."""
        if name in self.sinks:
            raise ValueError(f"two sinks are named {name!r}")
        counters = SinkCounters(depth=depth, oldest_age_s=oldest_age_s, configured=configured)
        self.sinks[name] = counters
        return counters

    def count_damage(self, count: int) -> None:
        """Buffer files set aside or stored rows unreadable; safe from any thread."""
        with self._damage_lock:
            self.buffer_damaged += count

    def snapshot(self) -> dict[str, Any]:
        """A plain dict for the stats log line (and anything else that reports counters)."""
        now = time.monotonic()
        return {
            "pid": os.getpid(),
            "uptime_s": round(now - self.started, 3),
            "loop_age_s": round(now - self.loop_at, 3),
            "received": self.received,
            "decode_failures": self.decode_failures,
            "dead_letter_write_failures": self.dead_letter_write_failures,
            "buffer_damaged": self.buffer_damaged,
            "disconnects": self.disconnects,
            "emitters_refused": self.emitters_refused,
            "dead_letters_discarded": self.dead_letters_discarded,
            "sinks": {name: counters.snapshot() for name, counters in self.sinks.items()},
        }
