"""Each sink's delivery latency while the other is dark, beside its healthy latency, in one run.

Run:  .venv/bin/python -m bench.independence            (about a minute and a half)
      .venv/bin/python -m bench.independence --quick    (a smoke run of about half a minute)

The forwarder runs as a subprocess in SOCKETIO,KAFKA mode at 200 events/s, the broker and the
relay each behind a fault proxy (harness/independence.py). For each direction (Kafka dark,
the browser measured; the relay dark, Kafka measured) the run alternates healthy stretches with a
dark one per kind: a black hole, refused connections, a link holding every chunk 0.5 s each way.
Latency is emit to the browser tab, or emit to the broker's acknowledgement. The target: the p99
while the other sink is dark stays within twice the healthy p99 plus 10 ms.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from harness.independence import HEALTHY, KINDS, measure

MEASURED = {"kafka": "browser", "relay": "kafka"}
"""The sink measured while the other one is dark."""


def p99(latencies: list[float]) -> float:
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    seconds = 2.0 if args.quick else 5.0
    figures: dict[str, dict[str, float]] = {}
    for dark, sink in MEASURED.items():
        with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
            latencies = measure(Path(tmp), dark=dark, healthy_s=seconds, dark_s=seconds)
        figures[sink] = {name: p99(values) for name, values in latencies.items()}
        print(f"{sink}: {len(latencies[HEALTHY])} events measured healthy", file=sys.stderr)
    print(f"\n200 events/s; {seconds:g} s per stretch; p99 in ms; target <= 2 x healthy + 10 ms\n")
    print("| sink | healthy p99 | other dark: black hole | refused | slow | target | met |")
    print("|---|---|---|---|---|---|---|")
    for sink, p99s in figures.items():
        target = 2 * p99s[HEALTHY] + 10
        met = "yes" if all(p99s[kind] <= target for kind in KINDS) else "no"
        dark = " | ".join(f"{p99s[kind]:.1f}" for kind in KINDS)
        print(f"| {sink} | {p99s[HEALTHY]:.1f} | {dark} | <= {target:.1f} | {met} |")
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
