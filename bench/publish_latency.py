"""What one publish costs the calling thread, beside a raw pyzmq send, in three forwarder states.

Run:  .venv/bin/python -m bench.publish_latency --gc on          (about four minutes)
      .venv/bin/python -m bench.publish_latency --workers-only   (the worker models alone: 1.5)
      .venv/bin/python -m bench.publish_latency --quick          (a smoke run)

States: a forwarder-like PULL peer reading in another process; no peer at all; a peer that is
connected but never reads (its queue and then ours fill up). Methods: the full
`publish_order_event` (encode and queue), `PushTransport.send` of an encoded frame alone, a raw
pyzmq `send(frame, NOBLOCK)` of the same frame, and an empty function call, the floor this
harness can measure. Bursts are back-to-back calls in groups of 1,000 with a pause after each
group (the pump drains it); paced calls come 1,000 a second with the thread asleep in between.
Every call is timed with perf_counter_ns, with the garbage collector on and then off.

Baselines, run inline as the seed and OpenAlgo do, against the embedded broker: kafka-python
`KafkaProducer.send()` (queued in the client), `send().get()` (the seed waited for the broker's
acknowledgement on `order_event`), and `ThreadPoolExecutor.submit` to ten workers (OpenAlgo's event
bus); `send().get()` takes milliseconds, so it runs a tenth of the calls.

Worker models: the emitter inside one gunicorn worker of each class (gthread: real threads;
eventlet, as OpenAlgo runs; gevent), timed in the request's own (green) thread by
bench.worker_app, in the same three forwarder states, in turns with the floor in the same
request: msgspec encoding of the same event plus a deque append, drained every millisecond by a
thread of the worker's own kind. Figures are the ratio of the p99s, with the target: 3x in
bursts, 2x paced.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import zmq
from kafka import KafkaProducer

from bench.timing import BURST, BURST_PAUSE_S, PACED, Call, bursts, paced
from emitter.publisher import EventPublisher, encode_event
from emitter.transport import PushTransport
from forwarder.sinks.kafka import producer_config
from forwarder.sinks.settings import KafkaSettings
from harness.broker import KafkaBroker
from harness.gunicorn import gunicorn

HWM = 10000
STATES = ("reading peer", "no peer", "stalled peer")
WORKERS = ("gthread", "eventlet", "gevent")
"""gunicorn worker classes: real threads, and the two that monkey-patch (eventlet is OpenAlgo's)."""
TARGETS = {"bursts": 3.0, PACED: 2.0}
"""Largest publish p99 accepted, as a multiple of the floor's p99 in the same worker and pattern."""
METHODS = ("publish", "transport.send", "raw zmq send")

PEER = """
import sys, zmq
pull = zmq.Context().socket(zmq.PULL)
pull.bind(sys.argv[1])
print("ready", flush=True)
if sys.argv[2] == "read":
    while True:
        pull.recv()
sys.stdin.read()
"""

IMPORT_COST = """
import sys, time
def rss_kib():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
if sys.argv[1] == "warm":
    import logging, threading, zmq, msgspec.msgpack
before = rss_kib()
start = time.perf_counter()
import emitter
print((time.perf_counter() - start) * 1e3, rss_kib() - before)
"""


@dataclass(frozen=True)
class Row:
    """One measured series and its summary cells."""

    state: str
    method: str
    pattern: str
    gc: str
    samples: list[int]
    refused: int

    def summary(self) -> dict[str, object]:
        """The row for the chart: microseconds at each quantile."""
        s = sorted(self.samples)
        n = len(s)
        return {
            "state": self.state,
            "method": self.method,
            "pattern": self.pattern,
            "gc": self.gc,
            **{f"p{q}": s[min(n - 1, int(n * q / 100))] / 1e3 for q in (50, 99, 99.9)},
            "max": s[-1] / 1e3,
        }

    def cells(self) -> list[str]:
        s = sorted(self.samples)
        n = len(s)

        def us(q: float) -> str:
            return f"{s[min(n - 1, int(n * q))] / 1e3:.1f}"

        quantiles = [us(0.5), us(0.99), us(0.999), f"{s[-1] / 1e3:.0f}"]
        return [
            self.state,
            self.method,
            self.pattern,
            self.gc,
            str(n),
            *quantiles,
            str(self.refused),
        ]


@contextmanager
def peer(endpoint: str, state: str) -> Iterator[None]:
    """A forwarder stand-in in its own process, ended by its pid whatever happens."""
    if state == "no peer":
        yield
        return
    mode = "read" if state == "reading peer" else "stall"
    with subprocess.Popen(
        [sys.executable, "-c", PEER, endpoint, mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            proc.stdout.readline()
            yield
        finally:
            proc.kill()


def order_event(publisher: EventPublisher) -> Call:
    def call() -> bool:
        return publisher.publish_order_event(
            "trader1",
            "SBIN-EQ",
            "BUY",
            "250101000012345",
            "live",
            exchange="NSE",
            price_type="MARKET",
            product_type="MIS",
        )

    return call


def raw_send(sock: zmq.Socket[bytes], frame: bytes) -> Call:
    def call() -> bool:
        try:
            sock.send(frame, zmq.NOBLOCK)
        except zmq.Again:
            return False
        return True

    return call


def empty() -> bool:
    return True


@contextmanager
def method_call(
    method: str, endpoint: str, frame: bytes, context: zmq.Context[zmq.Socket[bytes]]
) -> Iterator[Call]:
    """A fresh sender for one series, closed afterwards so series do not share a queue."""
    if method == "raw zmq send":
        sock = context.socket(zmq.PUSH)
        sock.setsockopt(zmq.SNDHWM, HWM)
        sock.connect(endpoint)
        try:
            yield raw_send(sock, frame)
        finally:
            sock.close(linger=0)
        return
    transport = PushTransport(endpoint, hwm=HWM, linger_ms=0)
    try:
        if method == "publish":
            yield order_event(EventPublisher(transport))
        else:
            yield lambda: transport.send(frame)
    finally:
        transport.close()


def measure(call: Call, pattern: str, count: int, gc_mode: str) -> tuple[list[int], int]:
    call()
    time.sleep(0.1)
    if gc_mode == "gc off":
        gc.disable()
    try:
        return (bursts if pattern == "bursts" else paced)(call, count)
    finally:
        gc.enable()


def run(endpoint: str, burst_calls: int, paced_calls: int, gc_modes: list[str]) -> list[Row]:
    frame = encode_event(
        "order_event",
        {"symbol": "SBIN-EQ", "action": "BUY", "orderid": "250101000012345", "mode": "live"},
        user_id="trader1",
    )
    patterns = (("bursts", burst_calls), (PACED, paced_calls))
    rows: list[Row] = []
    for gc_mode in gc_modes:
        for pattern, count in patterns:
            samples, refused = measure(empty, pattern, count, gc_mode)
            rows.append(Row("-", "empty call", pattern, gc_mode, samples, refused))
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    for state in STATES:
        with peer(endpoint, state):
            for gc_mode in gc_modes:
                for method in METHODS:
                    for pattern, count in patterns:
                        with method_call(method, endpoint, frame, context) as call:
                            samples, refused = measure(call, pattern, count, gc_mode)
                        rows.append(Row(state, method, pattern, gc_mode, samples, refused))
    context.term()
    return rows


def baselines(burst_calls: int, paced_calls: int, gc_modes: list[str]) -> list[Row]:
    """The inline ways of publishing this project replaces, measured like the emitter."""
    value = b'{"event_type":"order_event","data":{"symbol":"SBIN-EQ","action":"BUY"}}'
    rows: list[Row] = []
    with KafkaBroker() as broker, ThreadPoolExecutor(10) as pool:
        settings = KafkaSettings(bootstrap_servers=(broker.bootstrap,), topic="bench-inline")
        producer = KafkaProducer(**producer_config(settings))
        producer.send(settings.topic, value).get(30)
        calls: dict[str, tuple[Call, int]] = {
            "kafka-python send()": (lambda: bool(producer.send(settings.topic, value)), 1),
            "kafka-python send().get()": (
                lambda: bool(producer.send(settings.topic, value).get(30)),
                10,
            ),
            "executor.submit": (lambda: bool(pool.submit(empty)), 1),
        }
        for gc_mode in gc_modes:
            for method, (call, divisor) in calls.items():
                for pattern, count in (
                    ("bursts", burst_calls // divisor),
                    (PACED, paced_calls // divisor),
                ):
                    samples, refused = measure(call, pattern, count, gc_mode)
                    rows.append(Row("inline", method, pattern, gc_mode, samples, refused))
        producer.close()
    return rows


@dataclass(frozen=True)
class WorkerRow:
    """The floor and the publish, timed back to back in one worker, one forwarder state."""

    worker: str
    model: str
    state: str
    pattern: str
    floor: dict[str, float]
    publish: dict[str, float]

    @property
    def ratio(self) -> float:
        return self.publish["p99"] / self.floor["p99"]

    def met(self) -> bool:
        return self.ratio <= TARGETS[self.pattern]

    def summary(self) -> dict[str, object]:
        """The row for the JSON file: microseconds, and the ratio of the p99s."""
        return {
            "worker": self.worker,
            "model": self.model,
            "state": self.state,
            "pattern": self.pattern,
            "floor": self.floor,
            "publish": self.publish,
            "p99_ratio": self.ratio,
        }

    def cells(self) -> list[str]:
        return [
            self.worker,
            self.model,
            self.state,
            self.pattern,
            f"{self.floor['p50']:.1f}",
            f"{self.floor['p99']:.1f}",
            f"{self.publish['p50']:.1f}",
            f"{self.publish['p99']:.1f}",
            f"{self.ratio:.2f}x",
            f"<= {TARGETS[self.pattern]:.0f}x",
            "yes" if self.met() else "NO",
        ]


def measure_in_worker(url: str, pattern: str, count: int, endpoint: str) -> Any:
    """The floor and the publish timed in turns inside the worker by bench.worker_app."""
    answer = requests.post(
        f"{url}/measure",
        params={"pattern": pattern.split(maxsplit=1)[0], "count": str(count)},
        data={"endpoint": endpoint},
        timeout=600,
    )
    answer.raise_for_status()
    return answer.json()


def worker_models(tmp: Path, burst_calls: int, paced_calls: int) -> list[WorkerRow]:
    """The emitter inside each gunicorn worker class, each series beside its floor."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EMITTER_", "FORWARDER_"))}
    rows: list[WorkerRow] = []
    for worker in WORKERS:
        log = tmp / f"gunicorn-{worker}.log"
        with gunicorn(worker, env, log, app="bench.worker_app:create_app()") as app:
            for state in STATES:
                endpoint = f"ipc://{tmp / worker}-{state.split()[0]}.sock"
                with peer(endpoint, state):
                    for pattern, count in (("bursts", burst_calls), (PACED, paced_calls)):
                        timed = measure_in_worker(app.url, pattern, count, endpoint)
                        row = WorkerRow(
                            worker, timed["model"], state, pattern, timed["floor"], timed["publish"]
                        )
                        rows.append(row)
    return rows


def print_worker_table(rows: list[WorkerRow]) -> None:
    header = ["worker", "model", "forwarder", "pattern", "floor p50", "floor p99"]
    header += ["publish p50", "publish p99", "p99 / floor", "target", "met"]
    table = [header] + [row.cells() for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for i, line in enumerate(table):
        pairs = enumerate(zip(line, widths, strict=True))
        print("  ".join(c.ljust(w) if j < 4 else c.rjust(w) for j, (c, w) in pairs))
        if i == 0:
            print("  ".join("-" * w for w in widths))


def import_cost(runs: int, mode: str) -> tuple[float, float]:
    """Median time and added RSS of `import emitter` in fresh interpreters."""
    times, rss = [], []
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-c", IMPORT_COST, mode], capture_output=True, text=True, check=True
        ).stdout.split()
        times.append(float(out[0]))
        rss.append(float(out[1]))
    return sorted(times)[runs // 2], sorted(rss)[runs // 2] / 1024


def idle_cpu_ms(endpoint: str, seconds: float) -> float:
    """CPU the whole process spends while the pump is parked and nothing is published."""
    transport = PushTransport(endpoint, hwm=HWM, linger_ms=0)
    transport.send(b"x")
    while not transport.parked:
        time.sleep(0.01)
    before = resource.getrusage(resource.RUSAGE_SELF)
    time.sleep(seconds)
    after = resource.getrusage(resource.RUSAGE_SELF)
    transport.close()
    return (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1e3


def print_table(rows: list[Row]) -> None:
    header = ["state", "method", "pattern", "gc", "calls", "p50", "p99", "p99.9", "max", "False"]
    table = [header] + [row.cells() for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for i, line in enumerate(table):
        pairs = enumerate(zip(line, widths, strict=True))
        cells = [c.ljust(w) if j < 4 else c.rjust(w) for j, (c, w) in pairs]
        print("  ".join(cells))
        if i == 0:
            print("  ".join("-" * w for w in widths))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--gc", choices=("on", "off", "both"), default="both")
    parser.add_argument(
        "--workers-only", action="store_true", help="only the gunicorn worker models, vs the floor"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    burst_calls, paced_calls, runs, idle_s = (
        (5_000, 500, 3, 1.0) if args.quick else (200_000, 5_000, 9, 5.0)
    )
    worker_bursts, worker_paced = (5_000, 300) if args.quick else (50_000, 3_000)
    gc_modes = {"on": ["gc on"], "off": ["gc off"], "both": ["gc on", "gc off"]}[args.gc]
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="emb") as tmp:
        endpoint = f"ipc://{Path(tmp) / 'events.sock'}"
        if not args.workers_only:
            rows = run(endpoint, burst_calls, paced_calls, gc_modes)
            idle = idle_cpu_ms(endpoint, idle_s)
            rows += baselines(burst_calls // 10, paced_calls, gc_modes)
        workers = worker_models(Path(tmp), worker_bursts, worker_paced)
    print(
        f"python {sys.version.split()[0]}, pyzmq {zmq.__version__}, libzmq {zmq.zmq_version()}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; microseconds per call in "
        f"the calling thread; bursts of {BURST} calls, {BURST_PAUSE_S * 1e3:.0f} ms apart; "
        f"SNDHWM {HWM}; False: calls that returned False (dropped)"
    )
    if rows:
        print_table(rows)
        cold_ms, cold_mib = import_cost(runs, "cold")
        warm_ms, warm_mib = import_cost(runs, "warm")
        print(
            f"\nimport emitter, fresh interpreter: {cold_ms:.1f} ms, +{cold_mib:.1f} MiB RSS; "
            f"after zmq, msgspec, logging and threading (as in OpenAlgo): {warm_ms:.1f} ms, "
            f"+{warm_mib:.1f} MiB (medians of {runs})"
        )
        print(f"idle CPU of the process with the pump parked: {idle:.1f} ms over {idle_s:.0f} s")
    print(
        f"\nInside one gunicorn worker of each class, gc on: {worker_bursts:,} calls in bursts, "
        f"{worker_paced:,} paced; floor = msgspec encoding + deque append drained every 1 ms"
    )
    print_worker_table(workers)
    if args.json is not None:
        summaries = [row.summary() for row in rows] + [row.summary() for row in workers]
        args.json.write_text(json.dumps(summaries, indent=2))


if __name__ == "__main__":
    main()
