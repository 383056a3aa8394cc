"""One PNG of the figures `make bench` measured, for the README and for comparing runs.

Run:  .venv/bin/python -m bench.chart bench/out     (reads the JSON the benchmarks wrote there)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt


def publish_panel(axes: Any, rows: list[dict[str, Any]]) -> None:
    chosen = [
        row
        for row in rows
        if "worker" not in row
        and row["gc"] == "gc on"
        and row["method"] not in {"empty call", "transport.send"}
    ]
    labels = [f"{row['state']}\n{row['method']}\n{row['pattern']}" for row in chosen]
    positions = range(len(chosen))
    axes.barh([p - 0.2 for p in positions], [row["p50"] for row in chosen], 0.4, label="p50")
    axes.barh([p + 0.2 for p in positions], [row["p99"] for row in chosen], 0.4, label="p99")
    axes.set_yticks(list(positions), labels, fontsize=6)
    axes.set_xscale("log")
    axes.set_xlabel("microseconds in the calling thread (log scale)")
    axes.set_title("Cost of one publish")
    axes.legend()


def throughput_panel(axes: Any, end_to_end: dict[str, Any], buffer: dict[str, Any]) -> None:
    bars = {
        **{
            f"{kind} ({client})": rate
            for client, pair in end_to_end["throughput"].items()
            for kind, rate in pair.items()
        },
        **{f"forwarder alone:\n{name}": rate for name, rate in buffer["now"].items()},
    }
    axes.barh(list(bars), list(bars.values()))
    axes.set_xlabel("events per second")
    axes.set_title("Throughput")
    axes.tick_params(axis="y", labelsize=7)


def latency_panel(axes: Any, end_to_end: dict[str, Any]) -> None:
    names = ["emit to Kafka ack", "emit to browser"]
    figures = [end_to_end["kafka_ms"], end_to_end["browser_ms"]]
    axes.bar([0, 2], [f["p50"] for f in figures], 0.8, label="p50")
    axes.bar([0.8, 2.8], [f["p99"] for f in figures], 0.8, label="p99")
    axes.set_xticks([0.4, 2.4], names)
    axes.set_ylabel("milliseconds at 1,000 events/s")
    axes.set_title("End-to-end latency")
    axes.legend()


def independence_panel(axes: Any, independence: dict[str, dict[str, float]]) -> None:
    stretches = ["healthy", "blackhole", "refuse", "slow"]
    width = 0.8 / len(stretches)
    for offset, stretch in enumerate(stretches):
        positions = [n + offset * width for n in range(len(independence))]
        values = [p99s[stretch] for p99s in independence.values()]
        axes.bar(positions, values, width, label=f"other sink {stretch}" if offset else stretch)
    axes.set_xticks([n + 0.3 for n in range(len(independence))], list(independence))
    axes.set_ylabel("p99 milliseconds at 200 events/s")
    axes.set_title("Each sink while the other is dark")
    axes.legend(fontsize=7)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("directory", type=Path)
    args = parser.parse_args()
    publish = json.loads((args.directory / "publish.json").read_text())
    end_to_end = json.loads((args.directory / "end_to_end.json").read_text())
    buffer = json.loads((args.directory / "buffer.json").read_text())
    independence = json.loads((args.directory / "independence.json").read_text())
    figure, (left, middle, right, last) = plt.subplots(1, 4, figsize=(24, 8))
    publish_panel(left, publish)
    throughput_panel(middle, end_to_end, buffer)
    latency_panel(right, end_to_end)
    independence_panel(last, independence)
    figure.tight_layout()
    out = args.directory / "bench.png"
    figure.savefig(out, dpi=110)
    print(f"chart: {out}")


if __name__ == "__main__":
    main()
