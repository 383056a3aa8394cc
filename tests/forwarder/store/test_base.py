"""A sink's progress: several batches outstanding, released as a contiguous prefix."""

from __future__ import annotations

import time

import msgspec

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

    def test_the_age_comes_from_the_oldest_batch_taken_out_in_seconds(self):
        """Once a batch is out, its first event's emit time is the oldest: exact to the clock."""
        progress = Progress()
        progress.added(2, time.time_ns() - 10_000_000_000)
        early = msgspec.structs.replace(numbered(1), ts=1_000_000_000)
        progress.taken_out(Batch([early, numbered(2)], first=1, last=2))
        before = time.time_ns()
        age = progress.oldest_age_s()
        after = time.time_ns()
        assert age is not None
        assert (before - early.ts) / 1e9 <= age <= (after - early.ts) / 1e9

    def test_an_event_emitted_now_is_not_aged(self):
        """The age is not rounded up: one just emitted is younger than the time since then."""
        progress = Progress()
        emitted = time.time_ns()
        progress.added(1, emitted)
        age = progress.oldest_age_s()
        assert age is not None
        assert age <= (time.time_ns() - emitted) / 1e9

    def test_events_lost_before_they_were_taken_leave_the_rest_aged(self):
        """Dropping some of the held events keeps the age while any remain, down to one."""
        progress = Progress()
        progress.added(5, time.time_ns() - 3_000_000_000)
        progress.lost(2)
        assert progress.oldest_age_s() is not None
        progress.lost(2)
        assert progress.waiting == 1
        assert progress.oldest_age_s() is not None
        progress.lost(1)
        assert progress.oldest_age_s() is None


class TestBatchExtend:
    def test_an_empty_batch_extended_starts_where_the_later_one_starts(self):
        """The batcher's first take may come back empty of events yet be extended."""
        joined = Batch([], first=0, last=0)
        joined.extend(batch(4, 6))
        assert (len(joined), joined.first, joined.last) == (3, 4, 6)
        joined.extend(Batch([], first=9, last=9))
        assert (joined.first, joined.last) == (4, 6)
