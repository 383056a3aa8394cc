"""Groups queued events into batches: a sink delivers many events for nearly the cost of one."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Batcher"]

T = TypeVar("T")


class Batcher(Generic[T]):
    """Takes up to `max_size` items, waiting at most `linger_s` after the first for more."""

    def __init__(
        self,
        source: queue.Queue[T],
        *,
        max_size: int,
        linger_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._source = source
        self._max_size = max_size
        self._linger_s = linger_s
        self._clock = clock

    def next_batch(self, wait_s: float) -> list[T]:
        """The next batch, or [] when nothing arrived within `wait_s`.

        Items already queued are always taken (up to the maximum) even once the linger is over, so a
        backlog drains in full batches whatever the linger.
        """
        try:
            batch = [self._source.get(timeout=wait_s)]
        except queue.Empty:
            return []
        deadline = self._clock() + self._linger_s
        while len(batch) < self._max_size:
            remaining = deadline - self._clock()
            try:
                item = (
                    self._source.get(timeout=remaining)
                    if remaining > 0
                    else self._source.get_nowait()
                )
            except queue.Empty:
                break
            batch.append(item)
        return batch
