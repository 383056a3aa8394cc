"""The one throttle: a report per interval, with the count of those held back."""

from __future__ import annotations

import itertools

from emitter.throttle import Throttle


class TestThrottle:
    def test_one_line_per_interval_then_the_count_of_those_held_back(self):
        """A flood of bad frames yields one warning per interval that says how many it hid."""
        now = [0.0]
        throttle = Throttle(10, clock=lambda: now[0])
        first = throttle.ready()
        held = [throttle.ready() for _ in range(5)]
        now[0] = 10.0
        assert (first, held, throttle.ready(), throttle.ready()) == (0, [None] * 5, 5, None)

    def test_a_quiet_source_is_never_held_back(self):
        """Occasional lines all get through."""
        ticks = itertools.count(step=60)
        throttle = Throttle(10, clock=lambda: next(ticks))
        assert [throttle.ready() for _ in range(3)] == [0, 0, 0]

    def test_drain_hands_over_what_was_held_back(self):
        """A final burst is reported on close: drain gives its count once, then zero."""
        throttle = Throttle(10, clock=lambda: 0.0)
        throttle.ready()
        throttle.ready()
        throttle.ready()
        assert (throttle.drain(), throttle.drain(), throttle.ready()) == (2, 0, None)
