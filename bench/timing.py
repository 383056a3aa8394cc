"""How a call's cost is sampled: in bursts and paced, the same in the bench and inside a worker."""

from __future__ import annotations

import time
from collections.abc import Callable

BURST = 1000
BURST_PAUSE_S = 0.02
PACED_RATE = 1000.0
PACED = f"paced {PACED_RATE / 1000:.0f}k/s"

Call = Callable[[], bool]


def bursts(call: Call, total: int) -> tuple[list[int], int]:
    """BURST back-to-back calls, then a pause (the pump drains it), until `total` were timed."""
    clock = time.perf_counter_ns
    samples: list[int] = []
    refused = 0
    while len(samples) < total:
        for _ in range(BURST):
            start = clock()
            ok = call()
            samples.append(clock() - start)
            refused += not ok
        time.sleep(BURST_PAUSE_S)
    return samples, refused


def paced(call: Call, total: int) -> tuple[list[int], int]:
    """PACED_RATE calls a second, the caller asleep in between (in a green worker: the hub runs)."""
    clock = time.perf_counter_ns
    samples: list[int] = []
    refused = 0
    next_at = time.perf_counter()
    for _ in range(total):
        next_at += 1.0 / PACED_RATE
        pause = next_at - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        start = clock()
        ok = call()
        samples.append(clock() - start)
        refused += not ok
    return samples, refused


def quantile_us(samples: list[int], q: float) -> float:
    """The q-quantile (0-1) of nanosecond samples, in microseconds."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] / 1e3
