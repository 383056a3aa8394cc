"""How long to wait before trying a sink again, and a clock tests can drive without sleeping."""

from __future__ import annotations

import random
import threading
import time
from typing import Final, Protocol

__all__ = ["Backoff", "Clock", "SystemClock"]

_MAX_EXPONENT: Final = 32
"""2**32 times any base is past every sensible cap; stopping there keeps the arithmetic small."""


class Clock(Protocol):
    """Monotonic time and an interruptible sleep: the two things retrying needs from the world."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards."""
        ...

    def sleep(self, seconds: float, wake: threading.Event) -> None:
        """Wait `seconds`, returning early once `wake` is set."""
        ...


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        """Seconds from time.monotonic."""
        return time.monotonic()

    def sleep(self, seconds: float, wake: threading.Event) -> None:
        """Block on the event so a shutdown does not wait out a long backoff."""
        wake.wait(max(seconds, 0.0))


class Backoff:
    """Exponential backoff with full jitter, so many retrying clients do not hit a sink in step."""

    def __init__(self, base_ms: int, max_ms: int, *, rng: random.Random | None = None) -> None:
        self.base_ms = base_ms
        self.max_ms = max_ms
        self._rng = rng or random.Random()  # noqa: S311 - jitter needs spread, not secrecy

    def ceiling_ms(self, retry: int) -> int:
        """The longest delay before retry `retry` (0 for the first): min(cap, base * 2**retry)."""
        return min(self.max_ms, self.base_ms << min(retry, _MAX_EXPONENT))

    def delay_s(self, retry: int) -> float:
        """A delay drawn uniformly from [0, ceiling], in seconds."""
        return self._rng.uniform(0, self.ceiling_ms(retry)) / 1000
