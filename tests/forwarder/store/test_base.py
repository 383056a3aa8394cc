"""A sink's progress: several batches outstanding, released as a contiguous prefix."""

from __future__ import annotations

from forwarder.store.base import Batch, Damaged, Progress
from harness.events import numbered


def batch(first: int, last: int) -> Batch:
    return Batch([numbered(n) for n in range(first, last + 1)], first=first, last=last)


class TestBatch:
    def test_length_counts_damaged_positions_so_such_a_batch_is_finished_too(self):
        """A batch of nothing but unreadable rows is truthy: the worker finishes it."""
        only_damage = Batch(damaged=[Damaged(b"\xc1", "bad", count=3)], first=1, last=3)
        assert len(only_damage) == 3
        assert only_damage

    def test_extend_joins_the_next_batch(self):
        joined = batch(1, 2)
        joined.extend(batch(3, 5))
        assert (len(joined), joined.first, joined.last) == (5, 1, 5)


class TestProgress:
    def test_finishing_out_of_order_releases_only_the_contiguous_prefix(self):
        """A later batch finished first waits for the earlier one: nothing is released early."""
        progress = Progress()
        progress.added(9, numbered(0).ts)
        first, second, third = batch(1, 3), batch(4, 6), batch(7, 9)
        for taken in (first, second, third):
            progress.taken_out(taken)
        progress.finish(second)
        assert (progress.finished, progress.waiting) == (0, 9)
        progress.finish(first)
        assert (progress.finished, progress.waiting) == (6, 3)
        progress.finish(third)
        assert (progress.finished, progress.waiting) == (9, 0)
        assert progress.oldest_age_s() is None

    def test_a_joined_batch_finishes_every_batch_it_holds(self):
        """The batcher joins takes; finishing the joined batch finishes each of them."""
        progress = Progress()
        progress.added(5, numbered(0).ts)
        first, second = batch(1, 2), batch(3, 5)
        progress.taken_out(first)
        progress.taken_out(second)
        first.extend(second)
        progress.finish(first)
        assert (progress.finished, progress.waiting) == (5, 0)

    def test_oldest_age_follows_the_oldest_unfinished_event(self):
        progress = Progress()
        old = numbered(1)
        progress.added(2, old.ts - 5_000_000_000)
        age = progress.oldest_age_s()
        assert age is not None
        assert age >= 5
        progress.lost(2)
        assert progress.oldest_age_s() is None
