"""Batching: size cap, linger after the first item, and full batches from a backlog."""

from __future__ import annotations

import itertools
import queue
import threading

from forwarder.batcher import Batcher


def filled(items: range) -> queue.Queue[int]:
    source: queue.Queue[int] = queue.Queue()
    for item in items:
        source.put(item)
    return source


class TestBatcher:
    def test_nothing_queued_gives_an_empty_batch(self):
        """An idle worker gets [] back after the wait, so it can look at its stop request."""
        assert Batcher(queue.Queue[int](), max_size=10, linger_s=0).next_batch(0.01) == []

    def test_a_batch_holds_at_most_max_size_and_keeps_the_rest(self):
        """The cap splits a backlog; the remainder comes next, in order."""
        batcher = Batcher(filled(range(25)), max_size=10, linger_s=0)
        assert [batcher.next_batch(0.01) for _ in range(4)] == [
            list(range(10)),
            list(range(10, 20)),
            list(range(20, 25)),
            [],
        ]

    def test_a_backlog_drains_in_full_batches_even_with_no_linger(self):
        """Queued items are taken without waiting, so linger 0 does not mean batches of one."""
        batcher = Batcher(filled(range(500)), max_size=500, linger_s=0)
        assert batcher.next_batch(0.01) == list(range(500))

    def test_an_item_arriving_within_the_linger_joins_the_batch(self):
        """The batcher waits after the first item for more, up to the linger."""
        source = filled(range(1))
        late = threading.Timer(0.1, source.put, args=(1,))
        late.start()
        try:
            batch = Batcher(source, max_size=2, linger_s=60).next_batch(5)
        finally:
            late.cancel()
        assert batch == [0, 1]

    def test_the_linger_is_measured_on_the_injected_clock(self):
        """Once the clock passes the linger the batch goes, however long the linger was."""
        ticks = itertools.count(step=100)
        batcher = Batcher(filled(range(1)), max_size=10, linger_s=50, clock=lambda: next(ticks))
        assert batcher.next_batch(0.01) == [0]
