"""The memory store: a bounded queue per sink (FORWARDER_QUEUE_MAX events), lost on exit."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence

from emitter.contract import Envelope
from forwarder.store.base import QUEUE_FULL, Batch, Closed, Progress, Reader, Store, Stored

__all__ = ["MemoryStore"]


class MemoryStore(Store):
    """Each configured sink queues what it was given; what does not fit is dropped and reported."""

    def __init__(self, sinks: Sequence[str], queue_max: int) -> None:
        self._readers = {name: _MemoryReader(queue_max) for name in sinks}

    def put(self, frames: Sequence[bytes], envelopes: Sequence[Envelope]) -> Stored:
        dropped = {}
        for name, reader in self._readers.items():
            if refused := reader.offer(envelopes):
                dropped[name] = refused
        return Stored(dropped, QUEUE_FULL if dropped else None)

    def reader(self, sink: str) -> Reader:
        return self._readers[sink]

    def close(self) -> Closed:
        """Nothing to keep: what is left in memory is reported as waiting by the workers."""
        for reader in self._readers.values():
            reader.close()
        return Closed()


class _MemoryReader(Reader):
    def __init__(self, queue_max: int) -> None:
        self._queue_max = queue_max
        self._queued: deque[Sequence[Envelope]] = deque()
        """What was offered, a put at a time; `_skip` of the first were taken already."""
        self._skip = 0
        self._arrived = threading.Condition()
        self._progress = Progress()
        self._closed = False

    def offer(self, envelopes: Sequence[Envelope]) -> int:
        """Queue what fits in FORWARDER_QUEUE_MAX (those taken included); how many did not."""
        with self._arrived:
            kept = envelopes[: max(0, self._queue_max - self._progress.waiting)]
            if kept:
                self._queued.append(kept)
                self._progress.added(len(kept), kept[0].ts)
                self._arrived.notify()
        return len(envelopes) - len(kept)

    def take(self, limit: int, wait_s: float) -> Batch:
        queued = self._queued
        with self._arrived:
            if not queued and wait_s > 0 and not self._closed:
                self._arrived.wait(wait_s)
            taken: list[Envelope] = []
            while queued and len(taken) < limit:
                put = queued[0]
                end = min(len(put), self._skip + limit - len(taken))
                taken.extend(put[self._skip : end])
                self._skip = end
                if end == len(put):
                    queued.popleft()
                    self._skip = 0
            first = self._progress.taken + 1
            batch = Batch(taken, first=first, last=first + len(taken) - 1) if taken else Batch()
            self._progress.taken_out(batch)
        return batch

    def done(self, batch: Batch) -> None:
        with self._arrived:
            self._progress.finish(batch)

    def waiting(self) -> int:
        return self._progress.waiting

    def oldest_age_s(self) -> float | None:
        with self._arrived:
            return self._progress.oldest_age_s()

    def close(self) -> None:
        with self._arrived:
            self._closed = True
            self._arrived.notify_all()
