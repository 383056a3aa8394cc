"""Waiting on a condition instead of a fixed sleep: one poll loop for tests, demo and benchmarks."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final, TypeVar

__all__ = ["WaitTimeoutError", "poll", "wait_until"]

T = TypeVar("T")

INTERVAL_S: Final = 0.05


class WaitTimeoutError(AssertionError):
    """The condition did not hold in time: an AssertionError, so pytest reports a failed test."""


def poll(condition: Callable[[], T], timeout: float, *, interval: float = INTERVAL_S) -> T | None:
    """The condition's first true value, or None after `timeout` s: for callers that report a
    shortfall themselves. Checked once more at the deadline, so a slow check still counts."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        time.sleep(min(interval, remaining))


def wait_until(
    condition: Callable[[], T],
    timeout: float = 30.0,
    *,
    what: str = "the condition",
    interval: float = INTERVAL_S,
) -> T:
    """The condition's first true value; raises WaitTimeoutError naming `what` after `timeout` s.

    The default timeout is generous: a shared two-core machine may be slow, never wrong."""
    value = poll(condition, timeout, interval=interval)
    if not value:
        raise WaitTimeoutError(f"timed out after {timeout} s waiting for {what}")
    return value
