"""One report per interval, with a count of those held back, so a flood of the same problem stays
readable; the emitter's warnings and the forwarder's log lines both use it."""

from __future__ import annotations

import time
from collections.abc import Callable

from emitter._runtime import real_lock

__all__ = ["Throttle"]


class Throttle:
    """Lets one report through per interval and counts those held back."""

    def __init__(
        self, interval_s: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._interval_s = interval_s
        self._clock = clock
        self._lock = real_lock()
        self._next = float("-inf")
        self._held = 0

    def ready(self) -> int | None:
        """None to stay silent; else how many reports were held back since the last one."""
        now = self._clock()
        with self._lock:
            if now < self._next:
                self._held += 1
                return None
            held, self._held = self._held, 0
            self._next = now + self._interval_s
            return held

    def drain(self) -> int:
        """How many reports were held back since the last one, now counted as reported."""
        with self._lock:
            held, self._held = self._held, 0
            return held
