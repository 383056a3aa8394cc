"""Each sink keeps its own pace: while one is dark, the other's latency stays near its healthy one.

Darkness comes in three kinds, each through a fault proxy: a black hole (connections open,
bytes swallowed), refused connections, and a slow link (every chunk held half a second each way).
Latency is judged against the same run's healthy stretches, never an absolute figure: each dark
stretch's p99 must stay within twice the healthy p99, plus 10 ms.

The machine's two cores are shared: a stall of the whole machine can land on one dark stretch
and on no healthy one. A kind that misses is measured once more, in a run of its own, and must
meet the target then; a coupling between the sinks misses both times.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.independence import HEALTHY, KINDS, measure

pytestmark = pytest.mark.integration


def p99(latencies: list[float]) -> float:
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def missed(latencies: dict[str, list[float]], kinds: tuple[str, ...], sink: str) -> list[str]:
    """The kinds of darkness during which the sink's p99 missed the target."""
    healthy = p99(latencies[HEALTHY])
    report = {kind: round(p99(latencies[kind]), 1) for kind in kinds}
    print(f"\n{sink} p99 healthy {healthy:.1f} ms; with the other sink dark: {report}")
    for kind in kinds:
        assert len(latencies[kind]) >= 300, f"too few {sink} events measured while {kind}"
    return [kind for kind in kinds if p99(latencies[kind]) > 2 * healthy + 10]


def assert_unaffected(run_dir: Path, dark: str, sink: str) -> None:
    misses = missed(measure(run_dir / "first", dark=dark), KINDS, sink)
    if misses:
        again = measure(run_dir / "again", dark=dark, kinds=misses)
        misses = missed(again, tuple(misses), sink)
    assert misses == [], f"{sink} delayed past 2 x healthy p99 + 10 ms while the other was dark"


def test_a_dark_kafka_does_not_delay_the_browser(tmp_path):
    assert_unaffected(tmp_path, "kafka", "browser")


def test_a_dark_relay_does_not_delay_kafka(tmp_path):
    assert_unaffected(tmp_path, "relay", "kafka")
