"""What the disk buffer costs: events per second through the forwarder, buffered and not, beside
the same figures for the store as it was before forwarder/store/, measured in the same run.

Run:  .venv/bin/python -m bench.buffer_throughput            (about a minute and a half)
      .venv/bin/python -m bench.buffer_throughput --quick    (a smoke run of a few seconds)

The real pipeline (ZeroMQ PULL, decode, store, batcher, worker) runs in a fresh process with a
sink that acknowledges at once and keeps nothing, so the sink costs nothing and the figure is the
forwarder's own ceiling. A second process pushes pre-encoded events as fast as ZeroMQ takes them.
The earlier store runs from `git archive BASELINE` of this checkout (a clone without that commit
shows the current store alone). Each configuration runs five times, the two stores interleaved;
the table shows the medians.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from emitter.contract import Envelope
from forwarder import log_setup
from forwarder.service import Forwarder
from forwarder.settings import Settings
from forwarder.sinks.base import Delivery, Sink

PUSHER = """
import sys, time, zmq
from emitter.contract import Envelope, encode_envelope
count = int(sys.argv[2])
frames = [
    encode_envelope(Envelope(1, f"ev-{n:08d}", time.time_ns(), "order_event", "order.placed",
        "alice", "alice", {"symbol": "SBIN-EQ", "action": "BUY", "orderid": f"ORD{n}",
        "exchange": "NSE", "price_type": "MARKET", "product_type": "MIS", "mode": "live"}, True))
    for n in range(count)
]
context = zmq.Context()
push = context.socket(zmq.PUSH)
push.setsockopt(zmq.SNDHWM, 0)
push.setsockopt(zmq.LINGER, -1)
push.connect(sys.argv[1])
for frame in frames:
    push.send(frame)
push.close()
context.term()
"""

ROOT = Path(__file__).resolve().parent.parent
BASELINE = "95a187c"
"""The last commit with the store of forwarder/backlog.py and forwarder/buffer.py."""
ONE_RUN = "import json, sys; from bench.buffer_throughput import run_once; " + (
    "print(run_once(int(sys.argv[1]), json.loads(sys.argv[2])))"
)

CONFIGURATIONS = {
    "memory (no buffer)": {"buffer": "memory"},
    "disk, FORWARDER_FSYNC=off": {"buffer": "disk", "fsync": "off"},
    "disk, FORWARDER_FSYNC=batch (default)": {"buffer": "disk", "fsync": "batch"},
    "disk, FORWARDER_FSYNC=always": {"buffer": "disk", "fsync": "always"},
}


class DiscardingSink(Sink):
    """Acknowledges every event at once and keeps none: memory stays flat from run to run."""

    name = "discard"

    def deliver(self, batch: Sequence[Envelope]) -> Delivery:
        return Delivery()


def run_once(count: int, overrides: dict[str, str]) -> float:
    """Events per second from the first event received to the last one acknowledged."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = replace(
            Settings(),
            endpoint=f"ipc://{tmp}/events.sock",
            state_dir=Path(tmp) / "state",
            queue_max=count,
            buffer_max_bytes=1 << 30,
            stats_interval_s=0,
            **overrides,  # type: ignore[arg-type]
        )
        forwarder = Forwarder(settings, [DiscardingSink()])
        thread = threading.Thread(target=forwarder.run)
        thread.start()
        try:
            while forwarder.stats.sinks.get(DiscardingSink.name) is None:
                time.sleep(0.01)
            pusher = subprocess.Popen([sys.executable, "-c", PUSHER, settings.endpoint, str(count)])
            while forwarder.stats.received == 0:
                time.sleep(0.0005)
            started = time.perf_counter()
            counters = forwarder.stats.sinks[DiscardingSink.name]
            while counters.delivered < count:
                time.sleep(0.001)
            elapsed = time.perf_counter() - started
            pusher.wait(60)
        finally:
            forwarder.stop()
            thread.join(60)
        return count / elapsed


def in_process(tree: Path, count: int, overrides: dict[str, str]) -> float:
    """One run of `run_once` in a fresh interpreter, importing the forwarder from `tree`."""
    result = subprocess.run(
        [sys.executable, "-c", ONE_RUN, str(count), json.dumps(overrides)],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return float(result.stdout.strip().splitlines()[-1])


def baseline_tree(into: Path) -> Path | None:
    """The earlier store's code, unpacked from git; None when this checkout lacks the commit."""
    archive = subprocess.run(
        ["git", "archive", BASELINE, "bench", "emitter", "forwarder"],  # noqa: S607 - git on PATH
        cwd=ROOT,
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        return None
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    return into


def main() -> None:
    log_setup.configure(logging.WARNING, "console", stream=sys.stderr)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    count, rounds = (20_000, 1) if args.quick else (300_000, 5)
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"now": ROOT, "before": baseline_tree(Path(tmp))}
        results: dict[str, dict[str, list[float]]] = {
            store: {name: [] for name in CONFIGURATIONS} for store, tree in trees.items() if tree
        }
        for _ in range(rounds):
            for name, overrides in CONFIGURATIONS.items():
                for store, runs in results.items():
                    tree = trees[store]
                    assert tree is not None
                    runs[name].append(in_process(tree, count, overrides))
    medians = {
        store: {name: statistics.median(rates) for name, rates in runs.items()}
        for store, runs in results.items()
    }
    now = medians["now"]
    before = medians.get("before")
    baseline = now["memory (no buffer)"]
    print(f"{count:,} events per run, median of {rounds} run(s), sink acknowledging at once")
    if before is None:
        print(f"(commit {BASELINE} is not in this checkout: the earlier store is not measured)")
    print(
        f"\n| {'configuration':<38} | {'before':>9} | {'now':>9} | {'now/before':>10} | "
        f"{'vs memory':>9} |"
    )
    print(f"|{'-' * 40}|{'-' * 11}|{'-' * 11}|{'-' * 12}|{'-' * 11}|")
    for name, rate in now.items():
        old = "" if before is None else f"{before[name]:,.0f}"
        ratio = "" if before is None else f"{rate / before[name]:.2f}x"
        print(f"| {name:<38} | {old:>9} | {rate:>9,.0f} | {ratio:>10} | {rate / baseline:>8.2f}x |")
    if args.json is not None:
        args.json.write_text(json.dumps(medians, indent=2))


if __name__ == "__main__":
    main()
