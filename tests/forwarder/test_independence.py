"""Each sink keeps its own pace: while one is dark, the other's latency stays near its healthy one.

Darkness comes in three kinds, each through a fault proxy: a black hole (connections open,
bytes swallowed), refused connections, and a slow link (every chunk held half a second each way).
Latency is judged against the same run's healthy stretches, never an absolute figure: each dark
stretch's p99 must stay within twice the healthy p99, plus 10 ms.
"""

from __future__ import annotations

import pytest

from tests.support.independence import HEALTHY, KINDS, measure

pytestmark = pytest.mark.integration


def p99(latencies: list[float]) -> float:
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def assert_unaffected(latencies: dict[str, list[float]], sink: str) -> None:
    healthy = p99(latencies[HEALTHY])
    report = {kind: round(p99(latencies[kind]), 1) for kind in KINDS}
    print(f"\n{sink} p99 healthy {healthy:.1f} ms; with the other sink dark: {report}")
    for kind in KINDS:
        assert len(latencies[kind]) >= 300, f"too few {sink} events measured while {kind}"
        assert p99(latencies[kind]) <= 2 * healthy + 10, (
            f"{sink} p99 {p99(latencies[kind]):.1f} ms while the other was {kind}, "
            f"healthy {healthy:.1f} ms"
        )


def test_a_dark_kafka_does_not_delay_the_browser(tmp_path):
    assert_unaffected(measure(tmp_path, dark="kafka"), "browser")


def test_a_dark_relay_does_not_delay_kafka(tmp_path):
    assert_unaffected(measure(tmp_path, dark="relay"), "kafka")
