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

    def test_the_same_seed_gives_the_same_delays(self):
        """An injected random source makes a retry schedule reproducible."""
        first = Backoff(50, 30_000, rng=random.Random(7))
        second = Backoff(50, 30_000, rng=random.Random(7))
        assert [first.delay_s(n) for n in range(10)] == [second.delay_s(n) for n in range(10)]

    def test_a_huge_retry_number_is_held_at_the_cap(self):
        """A sink down for days reaches retry numbers whose power of two would be absurd."""
        backoff = Backoff(100, 30_000, rng=random.Random(1))
        assert backoff.ceiling_ms(10**9) == 30_000
        assert 0 <= backoff.delay_s(10**9) <= 30


class TestSystemClock:
    def test_sleep_returns_at_once_when_woken(self):
        """A shutdown must not wait out a long backoff."""
        wake = threading.Event()
        wake.set()
        SystemClock().sleep(3600, wake)

    def test_sleep_ends_when_woken_from_another_thread(self):
        """The worker sleeps while the main thread asks it to drain."""
        wake = threading.Event()
        timer = threading.Timer(0.05, wake.set)
        timer.start()
        try:
            SystemClock().sleep(3600, wake)
        finally:
            timer.cancel()
        assert wake.is_set()
