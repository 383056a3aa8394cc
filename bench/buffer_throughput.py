"""What the disk buffer costs: events per second through the forwarder, buffered and not.

Run:  .venv/bin/python -m bench.buffer_throughput            (about half a minute)
      .venv/bin/python -m bench.buffer_throughput --quick    (a smoke run of a few seconds)

The real pipeline (ZeroMQ PULL, decode, store, batcher, worker) runs in this process with a sink
that acknowledges at once and keeps nothing, so the sink costs nothing and the figure is the
forwarder's own ceiling. A second process pushes pre-encoded events as fast as ZeroMQ takes them.
Each configuration runs five times, interleaved; the table shows the median.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from emitter.contract import Envelope
from forwarder import logs
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


def main() -> None:
    logs.configure(logging.WARNING, "console", stream=sys.stderr)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    count, rounds = (20_000, 1) if args.quick else (300_000, 5)
    results: dict[str, list[float]] = {name: [] for name in CONFIGURATIONS}
    for _ in range(rounds):
        for name, overrides in CONFIGURATIONS.items():
            results[name].append(run_once(count, overrides))
    baseline = statistics.median(results["memory (no buffer)"])
    print(f"{count:,} events per run, median of {rounds} run(s), sink acknowledging at once\n")
    print(f"| {'configuration':<38} | {'events/s':>9} | {'vs memory':>9} |")
    print(f"|{'-' * 40}|{'-' * 11}|{'-' * 11}|")
    for name, rates in results.items():
        rate = statistics.median(rates)
        print(f"| {name:<38} | {rate:>9,.0f} | {rate / baseline:>8.2f}x |")
    if args.json is not None:
        medians = {name: statistics.median(rates) for name, rates in results.items()}
        args.json.write_text(json.dumps(medians, indent=2))


if __name__ == "__main__":
    main()
