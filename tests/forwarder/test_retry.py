"""Backoff bounds and the interruptible clock."""

from __future__ import annotations

import random
import threading

import pytest

from forwarder.retry import Backoff, SystemClock


class TestBackoff:
    def test_ceiling_doubles_from_the_base_up_to_the_cap(self):
        """Retry n may wait at most min(cap, base * 2**n)."""
        backoff = Backoff(100, 1000)
        assert [backoff.ceiling_ms(n) for n in range(6)] == [100, 200, 400, 800, 1000, 1000]

    @pytest.mark.parametrize("retry", [0, 1, 3, 5, 40])
    def test_full_jitter_stays_within_zero_and_the_ceiling(self, retry):
        """Every delay lies in [0, ceiling] and the draws spread over that whole range."""
        backoff = Backoff(100, 5000, rng=random.Random(retry))
        ceiling_s = backoff.ceiling_ms(retry) / 1000
        delays = [backoff.delay_s(retry) for _ in range(2000)]
        assert all(0 <= delay <= ceiling_s for delay in delays)
        assert min(delays) < ceiling_s * 0.05
        assert max(delays) > ceiling_s * 0.95

    def test_the_delays_come_from_the_injected_random_source(self):
        """An injected random source makes a retry schedule reproducible: each delay is that
        source's uniform draw over [0, ceiling], and another seed gives another schedule."""
        backoff = Backoff(50, 30_000, rng=random.Random(7))
        reference = random.Random(7)
        expected = [reference.uniform(0, backoff.ceiling_ms(n)) / 1000 for n in range(10)]
        assert [backoff.delay_s(n) for n in range(10)] == expected
        other = Backoff(50, 30_000, rng=random.Random(8))
        assert [other.delay_s(n) for n in range(10)] != expected

    def test_a_huge_retry_number_is_held_at_the_cap(self):
        """A sink down for days reaches retry numbers whose power of two would be absurd."""
        backoff = Backoff(100, 30_000, rng=random.Random(1))
        assert backoff.ceiling_ms(10**9) == 30_000
        assert 0 <= backoff.delay_s(10**9) <= 30


def sleeping(clock: SystemClock, seconds: float, wake: threading.Event) -> threading.Thread:
    """The clock's sleep in a thread of its own, so the test can watch it without hanging."""
    thread = threading.Thread(target=clock.sleep, args=(seconds, wake), daemon=True)
    thread.start()
    return thread


class TestSystemClock:
    def test_sleep_returns_at_once_when_already_woken(self):
        """A shutdown must not wait out a long backoff: an hour's sleep with the event already
        set takes less time than a plain one-second wait measured in the same test."""
        clock = SystemClock()
        started = clock.monotonic()
        threading.Event().wait(1.0)
        one_second = clock.monotonic() - started
        wake = threading.Event()
        wake.set()
        thread = sleeping(clock, 3600, wake)
        started = clock.monotonic()
        thread.join(10)
        assert not thread.is_alive(), "an hour's sleep ignored an already set wake event"
        assert clock.monotonic() - started < one_second

    def test_sleep_waits_until_woken_from_another_thread_then_ends(self):
        """The worker sleeps while the main thread asks it to drain: still asleep before the
        event is set, gone right after."""
        wake = threading.Event()
        thread = sleeping(SystemClock(), 3600, wake)
        thread.join(0.2)
        assert thread.is_alive(), "an hour's sleep ended before it was woken"
        wake.set()
        thread.join(10)
        assert not thread.is_alive(), "the sleep did not end when woken"

    def test_sleep_without_a_wake_lasts_its_time(self):
        """Without a wake-up the delay is served in full (never less): the backoff paces."""
        clock = SystemClock()
        started = clock.monotonic()
        clock.sleep(0.3, threading.Event())
        assert clock.monotonic() - started >= 0.3

    def test_a_delay_of_zero_or_less_does_not_wait(self):
        """A deadline already passed gives a delay under zero: no wait at all, so less time than
        the 0.3 s sleep measured in the same test."""
        clock = SystemClock()
        started = clock.monotonic()
        clock.sleep(0.3, threading.Event())
        full = clock.monotonic() - started
        started = clock.monotonic()
        clock.sleep(0.0, threading.Event())
        clock.sleep(-5.0, threading.Event())
        assert clock.monotonic() - started < full
