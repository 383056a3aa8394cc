"""Counters of what the forwarder did: plain integers, so the hot path pays almost nothing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["SinkCounters", "Stats"]


@dataclass
class SinkCounters:
    """One sink's counters: `dropped` is written by the receiving thread, the rest by its worker."""

    depth: Callable[[], int] = field(default=lambda: 0, repr=False, compare=False)
    delivered: int = 0
    retried: int = 0
    dead_lettered: int = 0
    dropped: int = 0
    batches: int = 0

    def snapshot(self) -> dict[str, int]:
        """The counters and how many events wait for this sink right now."""
        return {
            "delivered": self.delivered,
            "retried": self.retried,
            "dead_lettered": self.dead_lettered,
            "dropped": self.dropped,
            "queued": self.depth(),
            "batches": self.batches,
        }


@dataclass
class Stats:
    """Everything the stats line reports; each counter has one writer, so no lock is needed."""

    received: int = 0
    decode_failures: int = 0
    dead_letter_write_failures: int = 0
    sinks: dict[str, SinkCounters] = field(default_factory=dict)

    def add_sink(self, name: str, depth: Callable[[], int]) -> SinkCounters:
        """Counters for a new sink; names must be unique so log lines can tell sinks apart."""
        if name in self.sinks:
            raise ValueError(f"two sinks are named {name!r}")
        counters = SinkCounters(depth=depth)
        self.sinks[name] = counters
        return counters

    def snapshot(self) -> dict[str, Any]:
        """A plain dict for the stats log line (and anything else that reports counters)."""
        return {
            "received": self.received,
            "decode_failures": self.decode_failures,
            "dead_letter_write_failures": self.dead_letter_write_failures,
            "sinks": {name: counters.snapshot() for name, counters in self.sinks.items()},
        }
