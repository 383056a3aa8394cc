"""Where events wait for each sink until it acknowledges them: on disk (default) or in memory.

The receiving thread `put`s what it decoded; each sink's worker `take`s from its own backlog and
calls `done` once a batch is delivered or dead-lettered. On disk, an event is stored before any
sink sees it and stays stored until every sink is done with it, so an outage or a restart loses
nothing the forwarder received.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

import structlog

from emitter.contract import Envelope, InvalidEnvelope, decode_envelope
from forwarder.buffer import BufferReader, DiskBuffer
from forwarder.deadletter import DeadLetters
from forwarder.logs import Throttle
from forwarder.settings import Settings
from forwarder.sinks.base import Sink
from forwarder.stats import SinkCounters, Stats

__all__ = ["BUFFER_FILE", "Backlog", "Batch", "DiskStore", "MemoryStore", "Store", "open_store"]

BUFFER_FILE: Final = "buffer.sqlite"
_RECENT_MAX: Final = 20_000
"""Events a sink may be behind and still be served from memory, decoded once."""

log = structlog.get_logger("forwarder.backlog")


@dataclass(slots=True)
class Batch:
    """Events handed to a sink, and how far their acknowledgement moves that sink's position."""

    envelopes: list[Envelope]
    upto: int = 0

    def __len__(self) -> int:
        return len(self.envelopes)

    def extend(self, later: Batch) -> None:
        """Append the events taken after these."""
        self.envelopes.extend(later.envelopes)
        self.upto = max(self.upto, later.upto)


class Backlog(Protocol):
    """One sink's waiting events, oldest first."""

    def take(self, limit: int, wait_s: float) -> Batch:
        """Up to `limit` events; waits at most `wait_s` for the first one."""
        ...

    def done(self, batch: Batch) -> None:
        """The sink finished these (delivered or dead-lettered): never hand them out again."""
        ...

    def depth(self) -> int:
        """Events this sink has not finished yet."""
        ...

    def oldest_age_s(self) -> float | None:
        """Seconds the oldest unfinished event has waited."""
        ...


class Store(Protocol):
    """What the receiving thread writes to and each worker reads from."""

    def put(self, frames: Sequence[bytes], envelopes: Sequence[Envelope]) -> None:
        """Keep valid events (each frame with its decoded envelope); never blocks for long."""
        ...

    def backlog(self, sink: Sink, counters: SinkCounters) -> Backlog: ...

    def close(self) -> None: ...


class _Dropped:
    """Counts drops on a sink and says so in the log, at most once per throttle interval."""

    def __init__(self, reason: str) -> None:
        self._reason = reason
        self._throttle = Throttle()

    def add(self, sink: str, counters: SinkCounters, count: int) -> None:
        counters.dropped += count
        if (held := self._throttle.ready()) is not None:
            log.warning(
                "event_dropped",
                sink=sink,
                reason=self._reason,
                dropped=counters.dropped,
                suppressed=held,
            )


class MemoryStore:
    """A bounded queue per sink (FORWARDER_QUEUE_MAX events): fast, and lost with the process."""

    def __init__(self, queue_max: int) -> None:
        self._queue_max = queue_max
        self._backlogs: list[_MemoryBacklog] = []

    def put(self, frames: Sequence[bytes], envelopes: Sequence[Envelope]) -> None:
        for backlog in self._backlogs:
            backlog.offer(envelopes)

    def backlog(self, sink: Sink, counters: SinkCounters) -> Backlog:
        backlog = _MemoryBacklog(sink, counters, self._queue_max)
        self._backlogs.append(backlog)
        return backlog

    def close(self) -> None:
        """Nothing to keep: what is left in memory is reported as undelivered by the workers."""


class _MemoryBacklog:
    def __init__(self, sink: Sink, counters: SinkCounters, queue_max: int) -> None:
        self._sink = sink
        self._counters = counters
        self._queue_max = queue_max
        self._queued: deque[Envelope] = deque()
        self._arrived = threading.Condition()
        self._taken: list[Envelope] = []
        self._dropped = _Dropped("queue_full")

    def offer(self, envelopes: Sequence[Envelope]) -> None:
        """Queue what the sink wants; what does not fit in FORWARDER_QUEUE_MAX is dropped."""
        wanted = list(filter(self._sink.wants, envelopes))
        with self._arrived:
            kept = wanted[: max(0, self._queue_max - len(self._queued))]
            self._queued.extend(kept)
            self._arrived.notify()
        if len(kept) < len(wanted):
            self._dropped.add(self._sink.name, self._counters, len(wanted) - len(kept))

    def take(self, limit: int, wait_s: float) -> Batch:
        queued = self._queued
        with self._arrived:
            if not queued and wait_s > 0:
                self._arrived.wait(wait_s)
            taken = [queued.popleft() for _ in range(min(limit, len(queued)))]
        self._taken.extend(taken)
        return Batch(taken)

    def done(self, batch: Batch) -> None:
        del self._taken[: len(batch)]

    def depth(self) -> int:
        return len(self._queued) + len(self._taken)

    def oldest_age_s(self) -> float | None:
        held = self._taken or self._queued
        try:
            return max(0.0, (time.time_ns() - held[0].ts) / 1e9)
        except IndexError:
            return None


class DiskStore:
    """One SQLite buffer shared by all sinks, each reading at its own position."""

    def __init__(
        self, settings: Settings, sinks: Sequence[Sink], stats: Stats, dead_letters: DeadLetters
    ) -> None:
        self._stats = stats
        self._dead_letters = dead_letters
        self._damage_lock = threading.Lock()
        self.buffer = DiskBuffer(
            settings.state_dir / BUFFER_FILE,
            [sink.name for sink in sinks],
            max_bytes=settings.buffer_max_bytes,
            when_full=settings.when_full,
            fsync=settings.fsync,
            on_corrupt=self._file_damaged,
        )
        self._arrived = threading.Condition()
        self.generation = 0
        self._backlogs: list[_DiskBacklog] = []
        self._full = _Dropped("buffer_full")
        self._failed = _Dropped("buffer_write_failed")
        self._write_throttle = Throttle()
        self._waiting_frames: list[bytes] = []
        self._waiting_envelopes: list[Envelope] = []
        self._queue_max = settings.queue_max

    def put(self, frames: Sequence[bytes], envelopes: Sequence[Envelope]) -> None:
        """Store, oldest first, what waits from earlier failed writes and then `frames`.

        A failed write (disk full, I/O error) keeps the events in memory, up to FORWARDER_QUEUE_MAX,
        and the next call tries again, so a disk that fills up and frees again loses nothing.
        """
        self._waiting_frames.extend(frames)
        self._waiting_envelopes.extend(envelopes)
        if not self._waiting_frames:
            return
        try:
            appended = self.buffer.append(self._waiting_frames)
        except sqlite3.Error as exc:
            self._write_failed(exc)
            return
        kept = self._waiting_envelopes[appended.start : appended.start + appended.count]
        self._waiting_frames, self._waiting_envelopes = [], []
        for backlog in self._backlogs:
            if count := appended.lost.get(backlog.sink.name):
                self._full.add(backlog.sink.name, backlog.counters, count)
                backlog.forget()
            backlog.remember(appended.first_seq, kept)
        with self._arrived:
            self.generation += 1
            self._arrived.notify_all()

    def _write_failed(self, exc: sqlite3.Error) -> None:
        overflow = len(self._waiting_frames) - self._queue_max
        if overflow > 0:
            del self._waiting_frames[:overflow]
            del self._waiting_envelopes[:overflow]
            for backlog in self._backlogs:
                self._failed.add(backlog.sink.name, backlog.counters, overflow)
        if (held := self._write_throttle.ready()) is not None:
            log.error(
                "buffer_write_failed",
                error=str(exc),
                waiting_in_memory=len(self._waiting_frames),
                suppressed=held,
            )

    def backlog(self, sink: Sink, counters: SinkCounters) -> Backlog:
        backlog = _DiskBacklog(self, sink, counters, self.buffer.reader(sink.name))
        self._backlogs.append(backlog)
        return backlog

    def wait_for_more(self, seen: int, timeout: float) -> None:
        with self._arrived:
            self._arrived.wait_for(lambda: self.generation != seen, timeout)

    def row_damaged(self, frame: bytes, reason: str, sink: str) -> None:
        """A stored row that no longer decodes, met by one sink: dead-lettered, the rest delivered.

        Each sink reading the row records it under its own name, as for a sink's refusal.
        """
        with self._damage_lock:  # sink threads count here side by side
            self._stats.buffer_damaged += 1
        self._dead_letters.record(frame, reason, sink=sink)

    def _file_damaged(self, aside: Path, reason: str, salvaged: int) -> None:
        with self._damage_lock:
            self._stats.buffer_damaged += 1
        log.error("buffer_damaged", moved_to=str(aside), reason=reason, salvaged=salvaged)

    def close(self) -> None:
        self.buffer.close()


class _DiskBacklog:
    """Reads in order from the buffer, or from the events just stored while it keeps up.

    In the steady state a sink takes events moments after they were stored: they are handed out
    from `_recent` (the runs this process stored, decoded once) without reading SQLite back. After
    a restart, or once a sink fell further behind than _RECENT_MAX, it reads the file.
    """

    def __init__(
        self, store: DiskStore, sink: Sink, counters: SinkCounters, reader: BufferReader
    ) -> None:
        self._store = store
        self.sink = sink
        self.counters = counters
        self._reader = reader
        self._recent: deque[tuple[int, Sequence[Envelope]]] = deque()
        self._recent_count = 0
        self._recent_lock = threading.Lock()

    def remember(self, first_seq: int, envelopes: Sequence[Envelope]) -> None:
        """Called by the receiving thread with what it just stored, at consecutive positions."""
        with self._recent_lock:
            self._recent.append((first_seq, envelopes))
            self._recent_count += len(envelopes)
            while self._recent_count > _RECENT_MAX:
                self._recent_count -= len(self._recent.popleft()[1])

    def forget(self) -> None:
        """Stored events were deleted to make room: read what is left from the file."""
        with self._recent_lock:
            self._recent.clear()
            self._recent_count = 0

    def take(self, limit: int, wait_s: float) -> Batch:
        deadline = time.monotonic() + wait_s
        while True:
            seen = self._store.generation
            batch = self._read(limit)
            remaining = deadline - time.monotonic()
            if batch or remaining <= 0:
                return batch
            self._store.wait_for_more(seen, remaining)

    def _read(self, limit: int) -> Batch:
        """The next events this sink wants; positions it skips are acknowledged with the batch."""
        wants = self.sink.wants
        while True:
            first, envelopes = self._from_memory(limit) or self._from_file(limit)
            if not envelopes:
                return Batch([])
            last = first + len(envelopes) - 1
            wanted = [e for e in envelopes if e is not None and wants(e)]
            if wanted:
                return Batch(wanted, last)
            self._reader.ack(last)

    def _from_memory(self, limit: int) -> tuple[int, list[Envelope | None]] | None:
        """The events after this sink's position, if the runs kept in memory start there."""
        first = self._reader.position + 1
        taken: list[Envelope | None] = []
        with self._recent_lock:
            recent = self._recent
            while recent and recent[0][0] + len(recent[0][1]) <= first:
                self._recent_count -= len(recent.popleft()[1])
            for run_first, envelopes in recent:
                offset = first + len(taken) - run_first
                if offset < 0:
                    break
                taken.extend(envelopes[offset : offset + limit - len(taken)])
                if len(taken) >= limit:
                    break
        if not taken:
            return None
        self._reader.skip_to(first + len(taken) - 1)
        return first, taken

    def _from_file(self, limit: int) -> tuple[int, list[Envelope | None]]:
        run = self._reader.read(limit)
        envelopes: list[Envelope | None] = []
        for frame in run.frames:
            try:
                envelopes.append(decode_envelope(frame))
            except InvalidEnvelope as exc:
                self.counters.dead_lettered += 1
                reason = f"unreadable in the buffer: {exc.reason}"
                self._store.row_damaged(frame, reason, self.sink.name)
                envelopes.append(None)
        return run.first_seq, envelopes

    def done(self, batch: Batch) -> None:
        if batch:
            self._reader.ack(batch.upto)

    def depth(self) -> int:
        return self._store.buffer.backlog(self.sink.name)[0]

    def oldest_age_s(self) -> float | None:
        oldest = self._store.buffer.backlog(self.sink.name)[1]
        return None if oldest is None else max(0.0, time.time() - oldest)


def open_store(
    settings: Settings, sinks: Sequence[Sink], stats: Stats, dead_letters: DeadLetters
) -> Store:
    """The store FORWARDER_BUFFER asks for."""
    if settings.buffer == "memory":
        return MemoryStore(settings.queue_max)
    return DiskStore(settings, sinks, stats, dead_letters)
