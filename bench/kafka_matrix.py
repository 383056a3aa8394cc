"""The forwarder against the raw client, per Kafka client, producer settings and number of keys.

Run:  .venv/bin/python -m bench.kafka_matrix              (about four minutes)
      .venv/bin/python -m bench.kafka_matrix --quick      (a smoke run of a minute)

Each cell runs three ways in the same broker, in alternating order from cell to cell:
- the forwarder as a subprocess with its default durability (FORWARDER_BUFFER=disk,
  FORWARDER_FSYNC=batch), fed pre-encoded events as fast as ZeroMQ takes them;
- a loop of the same client with the same producer settings sending the same values, keys and
  headers;
- the sink alone: the same events stored while Kafka was unreachable, then delivered by a
  forwarder started with nothing arriving meanwhile. Its ratio to the raw loop bounds what moving
  the receiving work off the sink's interpreter (a sink worker in a process of its own) could give.

Throughput is counted by a consumer in a process of its own, reading the topic as it fills: events
from the first event id it reads to the moment it has read every one once. CPU seconds per 100,000
events: the forwarder process, or the benchmark process running the raw loop (the client's own
threads included).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Producer
from kafka import KafkaProducer

from bench.end_to_end import cpu_s, envelope, forwarder, stats
from emitter.contract import encode_envelope
from forwarder.push import pusher
from forwarder.record import kafka_record
from forwarder.sinks.kafka import producer_config
from forwarder.sinks.kafka_confluent import producer_config as confluent_config
from forwarder.sinks.settings import KafkaSettings
from harness.broker import KafkaBroker, assign_all, reader
from harness.net import free_port

CLIENTS = ("kafka-python", "confluent")
PRODUCER_SETTINGS: dict[str, dict[str, str]] = {
    "defaults": {},
    "linger 20 ms, batch 256 KiB": {
        "KAFKA_PRODUCER_LINGER_MS": "20",
        "KAFKA_PRODUCER_BATCH_SIZE": "262144",
    },
    "lz4": {"KAFKA_PRODUCER_COMPRESSION": "lz4"},
}
KEYS = (1, 8, 1000)
TARGETS = {"kafka-python": 0.9, "confluent": 0.67}
EVENTS = {"kafka-python": 20_000, "confluent": 60_000}
QUICK_EVENTS = {"kafka-python": 5_000, "confluent": 15_000}
CONSUMER_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Cell:
    client: str
    settings: str
    keys: int
    events: int

    @property
    def env(self) -> dict[str, str]:
        return PRODUCER_SETTINGS[self.settings]


@dataclass
class Run:
    rate: float
    cpu_per_100k: float
    duplicates: int


@contextmanager
def counting(bootstrap: str, topic: str, count: int) -> Iterator[subprocess.Popen[str]]:
    """The independent consumer, started before anything is sent; it waits for the topic."""
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.kafka_matrix", "--consume", bootstrap, topic, str(count)],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        ready = process.stdout.readline() if process.stdout else ""
        if ready.strip() != "ready":
            raise RuntimeError(f"the consumer did not start: {ready!r}")
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)


def counted(process: subprocess.Popen[str]) -> dict[str, Any]:
    out, _ = process.communicate(timeout=CONSUMER_TIMEOUT_S + 10)
    result: dict[str, Any] = json.loads(out)
    if "error" in result:
        raise RuntimeError(result["error"])
    return result


def consume(bootstrap: str, topic: str, count: int) -> None:
    """In the consumer process: read `topic` from the start until `count` distinct event ids."""
    consumer = reader(bootstrap)
    print("ready", flush=True)
    deadline = time.monotonic() + CONSUMER_TIMEOUT_S
    if not assign_all(consumer, topic, CONSUMER_TIMEOUT_S):
        print(json.dumps({"error": f"topic {topic} never appeared"}))
        return
    seen: set[str | bytes] = set()
    duplicates = 0
    first_seen = None
    while len(seen) < count and time.monotonic() < deadline:
        for message in consumer.consume(10_000, 0.05):
            if message.error() is not None:
                continue
            headers = dict(message.headers() or [])
            event_id = headers.get("event_id")
            if event_id is None:
                continue
            if event_id in seen:
                duplicates += 1
            seen.add(event_id)
            if first_seen is None and len(seen) == 2:
                # The second id: the first may be a warm-up record sent well before.
                first_seen = time.time()
    done = time.time()
    consumer.close()
    print(
        json.dumps(
            {
                "first_seen": first_seen,
                "all_seen": done,
                "distinct": len(seen),
                "duplicates": duplicates,
            }
        )
    )


def forwarder_run(servers: str, run_dir: Path, cell: Cell, extra: dict[str, str]) -> Run:
    client, settings, keys, count = cell.client, cell.env | extra, cell.keys, cell.events
    frames = [encode_envelope(envelope(n, keys)) for n in range(count)]
    topic = f"fwd-{run_dir.name}"
    with (
        forwarder(
            run_dir,
            ORDER_EVENT_MODE="KAFKA",
            KAFKA_CLIENT=client,
            KAFKA_BOOTSTRAP_SERVERS=servers,
            KAFKA_ORDER_EVENTS_TOPIC=topic,
            **settings,
        ) as process,
        pusher(process.env["FORWARDER_ENDPOINT"], linger_ms=0, hwm=0) as push,
    ):
        # Like the raw loop's warm-up record: the producer is connected and the topic exists.
        push.send(encode_envelope(envelope(count, keys)))
        stats(process, until=lambda s: s.sinks["kafka"].delivered >= 1)
        pid = process.pid
        with counting(servers, topic, count + 1) as consumer:
            cpu_before = cpu_s(pid)
            for frame in frames:
                push.send(frame)
            result = counted(consumer)
            cpu = cpu_s(pid) - cpu_before
    return run(result, count, cpu)


def backlog_run(servers: str, run_dir: Path, cell: Cell, extra: dict[str, str]) -> Run:
    """The sink alone: store the events while Kafka is unreachable, then time their delivery by a
    forwarder that receives nothing meanwhile."""
    client, keys, count = cell.client, cell.keys, cell.events
    frames = [encode_envelope(envelope(n, keys)) for n in range(count)]
    topic = f"backlog-{run_dir.name}"
    settings = cell.env | extra | {"ORDER_EVENT_MODE": "KAFKA", "KAFKA_CLIENT": client}
    settings |= {"KAFKA_ORDER_EVENTS_TOPIC": topic, "FORWARDER_SHUTDOWN_TIMEOUT_S": "1"}
    with (
        forwarder(
            run_dir, KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}", **settings
        ) as process,
        pusher(process.env["FORWARDER_ENDPOINT"], linger_ms=0, hwm=0) as push,
    ):
        for frame in frames:
            push.send(frame)
        stats(process, until=lambda s: s.received >= count)
    with (
        counting(servers, topic, count) as consumer,
        forwarder(run_dir, KAFKA_BOOTSTRAP_SERVERS=servers, **settings) as process,
    ):
        cpu_before = cpu_s(process.pid)
        result = counted(consumer)
        cpu = cpu_s(process.pid) - cpu_before
    return run(result, count, cpu)


def raw_run(servers: str, topic: str, cell: Cell) -> Run:
    client, settings, keys, count = cell.client, cell.env, cell.keys, cell.events
    kafka = KafkaSettings.from_env(
        {"KAFKA_BOOTSTRAP_SERVERS": servers, "KAFKA_ORDER_EVENTS_TOPIC": topic, **settings}
    )
    records = [kafka_record(envelope(n, keys)) for n in range(count)]
    with counting(servers, topic, count + 1) as consumer:
        if client == "confluent":
            producer: Any = Producer(confluent_config(kafka))  # its stubs want other headers
            producer.produce(topic, b"warm-up", headers=[("event_id", b"warm-up")])
            producer.flush(30)
            cpu_before = process_cpu_s()
            for value, key, headers in records:
                while True:
                    try:
                        producer.produce(topic, value, key, headers=headers)
                        break
                    except BufferError:
                        producer.poll(0.01)
                producer.poll(0)
            producer.flush(60)
        else:
            kafka_producer = KafkaProducer(**producer_config(kafka))
            kafka_producer.send(topic, b"warm-up", headers=[("event_id", b"warm-up")]).get(30)
            cpu_before = process_cpu_s()
            for value, key, headers in records:
                kafka_producer.send(topic, value=value, key=key, headers=headers)
            kafka_producer.flush()
        cpu = process_cpu_s() - cpu_before
        result = counted(consumer)
        if client != "confluent":
            kafka_producer.close()
    return run(result, count, cpu)


def run(result: dict[str, Any], count: int, cpu_s: float) -> Run:
    """Events per second from the first event id read to the last, and CPU per 100,000 events."""
    rate = count / (result["all_seen"] - result["first_seen"])
    return Run(rate, cpu_s / count * 100_000, result["duplicates"])


def process_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer events per run")
    parser.add_argument("--rounds", type=int, default=1, help="runs per cell (median reported)")
    parser.add_argument("--client", choices=CLIENTS, action="append", help="only this client")
    parser.add_argument(
        "--settings", choices=list(PRODUCER_SETTINGS), action="append", help="only these settings"
    )
    parser.add_argument("--keys", type=int, choices=KEYS, action="append", help="only these keys")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a forwarder setting for every forwarder run, FORWARDER_INFLIGHT_BATCHES=8 say",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--chart", type=Path, help="also draw the ratios in this PNG")
    parser.add_argument("--consume", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.consume:
        bootstrap, topic, count = args.consume
        consume(bootstrap, topic, int(count))
        return
    events = QUICK_EVENTS if args.quick else EVENTS
    cells = [
        Cell(client, name, keys, events[client])
        for client, name, keys in itertools.product(
            args.client or CLIENTS, args.settings or PRODUCER_SETTINGS, args.keys or KEYS
        )
    ]
    extra = dict(setting.split("=", 1) for setting in args.set)
    rows: list[dict[str, Any]] = []
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-matrix-") as tmp:
        root = Path(tmp)
        with KafkaBroker() as broker:
            servers = broker.bootstrap
            for number, cell in enumerate(cells):
                runs: dict[str, list[Run]] = {"forwarder": [], "raw": [], "backlog": []}
                for round_ in range(args.rounds):
                    tag = f"{number}-{round_}"
                    # The in-memory broker grows with every run: alternate which goes first.
                    for kind in sorted(runs, reverse=(number + round_) % 2 == 1):
                        if kind == "raw":
                            run = raw_run(servers, f"raw-{tag}", cell)
                        else:
                            run_dir = root / f"{kind}-{tag}"
                            run_dir.mkdir()
                            make_run = forwarder_run if kind == "forwarder" else backlog_run
                            run = make_run(servers, run_dir, cell, extra)
                        runs[kind].append(run)
                rows.append(row(cell, runs))
                print_row(rows[-1], header=number == 0)
    elapsed = time.monotonic() - began
    print(f"\n{len(cells)} cells in {elapsed:.0f} s; {os.cpu_count()} cores, the broker's included")
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2))
    if args.chart is not None:
        chart(rows, args.chart)


def row(cell: Cell, runs: dict[str, list[Run]]) -> dict[str, Any]:
    fwd, raw, backlog = runs["forwarder"], runs["raw"], runs["backlog"]
    ratios = [f.rate / r.rate for f, r in zip(fwd, raw, strict=True)]
    backlog_ratios = [b.rate / r.rate for b, r in zip(backlog, raw, strict=True)]
    return {
        "client": cell.client,
        "settings": cell.settings,
        "keys": cell.keys,
        "events": cell.events,
        "forwarder": statistics.median(r.rate for r in fwd),
        "raw": statistics.median(r.rate for r in raw),
        "ratio": statistics.median(ratios),
        "forwarder_cpu_per_100k": statistics.median(r.cpu_per_100k for r in fwd),
        "raw_cpu_per_100k": statistics.median(r.cpu_per_100k for r in raw),
        "sink_alone": statistics.median(r.rate for r in backlog),
        "sink_alone_ratio": statistics.median(backlog_ratios),
        "sink_alone_cpu_per_100k": statistics.median(r.cpu_per_100k for r in backlog),
        "duplicates": sum(r.duplicates for r in fwd + backlog),
        "target": TARGETS[cell.client],
    }


def print_row(figures: dict[str, Any], *, header: bool) -> None:
    if header:
        print(
            "\n| client | producer settings | keys | forwarder events/s | raw events/s | ratio "
            "| target | met | CPU s/100k forwarder | CPU s/100k raw | sink alone events/s "
            "| sink alone ratio | CPU s/100k sink alone |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    met = "yes" if figures["ratio"] >= figures["target"] else "no"
    print(
        f"| {figures['client']} | {figures['settings']} | {figures['keys']:,} "
        f"| {figures['forwarder']:,.0f} | {figures['raw']:,.0f} | {figures['ratio']:.2f} "
        f"| >= {figures['target']} | {met} | {figures['forwarder_cpu_per_100k']:.2f} "
        f"| {figures['raw_cpu_per_100k']:.2f} | {figures['sink_alone']:,.0f} "
        f"| {figures['sink_alone_ratio']:.2f} | {figures['sink_alone_cpu_per_100k']:.2f} |",
        flush=True,
    )


def chart(rows: list[dict[str, Any]], out: Path) -> None:
    import matplotlib  # noqa: PLC0415 - only for --chart

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 - after choosing the backend

    figure, axes = plt.subplots(figsize=(12, 6))
    labels = [f"{r['client']}\n{r['settings']}\n{r['keys']} keys" for r in rows]
    colour = {"kafka-python": "tab:blue", "confluent": "tab:orange"}
    places = range(len(rows))
    axes.bar(
        [x - 0.2 for x in places],
        [r["ratio"] for r in rows],
        width=0.4,
        color=[colour[r["client"]] for r in rows],
        label="forwarder",
    )
    axes.bar(
        [x + 0.2 for x in places],
        [r["sink_alone_ratio"] for r in rows],
        width=0.4,
        color=[colour[r["client"]] for r in rows],
        alpha=0.4,
        label="sink alone (stored backlog)",
    )
    for client, target in TARGETS.items():
        axes.axhline(
            target, color=colour[client], linestyle="--", label=f"target {client} ({target})"
        )
    axes.set_xticks(range(len(rows)), labels, fontsize=6, rotation=90)
    axes.set_ylabel("forwarder / raw client, same run")
    axes.set_title("Forwarder throughput against the raw client")
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    print(f"chart: {out}")


if __name__ == "__main__":
    main()
