"""What every store offers: the receiving thread puts, each sink's worker takes and finishes.

A store holds plain values and decides nothing about sinks beyond which ones an event belongs to
(those configured when it was received). It reports what it dropped or could not read through
return values; counting, logging and dead-lettering are the caller's.

Every event a sink holds has a position, increasing in the order received. A worker `take`s a
`Batch` (the next positions after those already taken) and later calls `done` with it. Several
batches may be outstanding at once; finishing them releases the contiguous prefix of finished
positions, so a worker may acknowledge out of order without a position being released early.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from emitter.contract import Envelope

__all__ = ["Batch", "Closed", "Damaged", "Progress", "Reader", "Store", "Stored", "Unconfigured"]

BUFFER_FULL: Final = "buffer_full"
QUEUE_FULL: Final = "queue_full"
WRITE_FAILED: Final = "buffer_write_failed"


@dataclass(frozen=True, slots=True)
class Damaged:
    """Stored bytes that no longer read as `count` events: the worker dead-letters them."""

    frame: bytes
    reason: str
    count: int = 1


@dataclass(slots=True)
class Batch:
    """Events of one sink, oldest first, covering the positions `first`..`last`.

    Holds every event the sink was configured for, whether or not it wants it: the worker
    filters. Its length counts each position covered, damaged ones included, so a batch of
    nothing but damaged rows is still finished.
    """

    envelopes: list[Envelope] = field(default_factory=list)
    damaged: list[Damaged] = field(default_factory=list)
    first: int = 0
    last: int = 0

    def __len__(self) -> int:
        return len(self.envelopes) + sum(d.count for d in self.damaged)

    def extend(self, later: Batch) -> None:
        """Append the batch taken just after this one."""
        if not later:
            return
        if not self:
            self.first = later.first
        self.envelopes.extend(later.envelopes)
        self.damaged.extend(later.damaged)
        self.last = later.last


@dataclass(frozen=True, slots=True)
class Stored:
    """What a put or maintenance did not keep: per sink, events dropped, and why.

    `error` is the disk's refusal when a write failed; `unwritten` counts the events kept in
    memory until the disk takes them.
    """

    dropped: Mapping[str, int] = field(default_factory=dict)
    reason: str | None = None
    error: str | None = None
    unwritten: int = 0


@dataclass(frozen=True, slots=True)
class Unconfigured:
    """Events kept for a sink no longer configured, and the emit time (ns) of the oldest."""

    count: int
    oldest_ns: int | None


@dataclass(frozen=True, slots=True)
class Closed:
    """Per sink, the events that waited in memory and could not be stored before closing."""

    not_stored: Mapping[str, int] = field(default_factory=dict)


class Reader(ABC):
    """One sink's waiting events, oldest first; safe to use from that sink's worker thread."""

    @abstractmethod
    def take(self, limit: int, wait_s: float) -> Batch:
        """Up to `limit` events after those already taken; waits at most `wait_s` for one."""
        raise NotImplementedError

    @abstractmethod
    def done(self, batch: Batch) -> None:
        """The sink finished these (delivered or dead-lettered): never hand them out again."""
        raise NotImplementedError

    @abstractmethod
    def waiting(self) -> int:
        """Events this sink has not finished, those taken included; read from memory only."""
        raise NotImplementedError

    @abstractmethod
    def oldest_age_s(self) -> float | None:
        """Seconds since the oldest unfinished event was emitted; read from memory only."""
        raise NotImplementedError


class Store(ABC):
    """What the receiving thread writes to and each sink's worker reads from."""

    @abstractmethod
    def put(self, frames: Sequence[bytes], envelopes: Sequence[Envelope]) -> Stored:
        """Keep valid events (each frame with its decoded envelope) for the configured sinks."""
        raise NotImplementedError

    @abstractmethod
    def reader(self, sink: str) -> Reader:
        """The reader of a configured sink's waiting events; one per sink."""
        raise NotImplementedError

    def maintain(self) -> Stored:
        """Housekeeping between receives, on the receiving thread; the memory store has none."""
        return Stored()

    def unconfigured(self) -> Mapping[str, Unconfigured]:
        """Events waiting for sinks that are no longer configured."""
        return {}

    @abstractmethod
    def close(self) -> Closed:
        """Last writes and release; what could not be stored is reported, per sink."""
        raise NotImplementedError


class Progress:
    """A sink's outstanding batches: how far it finished, how much it holds, since when.

    Not thread-safe: the store calls it under its own lock. `finished` is the last position of
    the contiguous prefix of finished batches; `waiting` counts events added and not finished.
    """

    def __init__(self, finished: int = 0, waiting: int = 0, oldest_ns: int | None = None) -> None:
        self.finished = finished
        self.taken = finished
        self.waiting = waiting
        self._oldest_ns = oldest_ns
        self._outstanding: deque[list[int]] = deque()
        """[first, last, events, first emit ns, last emit ns, finished (0/1)] per batch."""

    def added(self, count: int, first_ns: int) -> None:
        """`count` new events belong to the sink; the first was emitted at `first_ns`."""
        if self.waiting == 0:
            self._oldest_ns = first_ns
        self.waiting += count

    def taken_out(self, batch: Batch) -> None:
        """The batch goes to the worker."""
        if not batch:
            return
        self.taken = batch.last
        now = time.time_ns()
        first_ns = batch.envelopes[0].ts if batch.envelopes else now
        last_ns = batch.envelopes[-1].ts if batch.envelopes else now
        self._outstanding.append([batch.first, batch.last, len(batch), first_ns, last_ns, 0])

    def finish(self, batch: Batch) -> None:
        """Mark the batches within `batch` finished; release the finished prefix."""
        if not batch:
            return
        for entry in self._outstanding:
            if entry[0] >= batch.first and entry[1] <= batch.last:
                entry[5] = 1
        last_ns = None
        while self._outstanding and self._outstanding[0][5]:
            _, self.finished, events, _, last_ns, _ = self._outstanding.popleft()
            self.waiting -= events
        if self._outstanding:
            self._oldest_ns = self._outstanding[0][3]
        elif last_ns is not None:
            # The next event is newer than the last one finished: close enough, and no read.
            self._oldest_ns = last_ns if self.waiting > 0 else None

    def lost(self, count: int) -> None:
        """Events not yet taken were dropped."""
        self.waiting -= count
        if self.waiting <= 0 and not self._outstanding:
            self._oldest_ns = None

    def oldest_age_s(self) -> float | None:
        """Seconds since the oldest unfinished event was emitted; None when none waits."""
        oldest = self._outstanding[0][3] if self._outstanding else self._oldest_ns
        if oldest is None or self.waiting <= 0:
            return None
        return max(0.0, (time.time_ns() - oldest) / 1e9)
