"""Groups waiting events into batches: a sink delivers many events for nearly the cost of one."""

from __future__ import annotations

import time
from collections.abc import Callable

from forwarder.store import Batch, Reader

__all__ = ["Batcher"]


class Batcher:
    """Takes up to `max_size` events, waiting at most `linger_s` after the first for more."""

    def __init__(
        self,
        source: Reader,
        *,
        max_size: int,
        linger_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._source = source
        self._max_size = max_size
        self._linger_s = linger_s
        self._clock = clock

    def next_batch(self, wait_s: float) -> Batch:
        """The next batch, empty when nothing arrived within `wait_s`.

        Events already waiting are always taken (up to the maximum) even once the linger is over,
        so a backlog drains in full batches whatever the linger.
        """
        batch = self._source.take(self._max_size, wait_s)
        if not batch:
            return batch
        deadline = self._clock() + self._linger_s
        while len(batch) < self._max_size:
            more = self._source.take(
                self._max_size - len(batch), max(0.0, deadline - self._clock())
            )
            if not more:
                break
            batch.extend(more)
        return batch
