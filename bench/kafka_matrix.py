"""The forwarder against the raw client, per Kafka client, producer settings and number of keys.

Run:  .venv/bin/python -m bench.kafka_matrix              (about four minutes)
      .venv/bin/python -m bench.kafka_matrix --quick      (a smoke run of a minute)

Each cell runs both in the same broker, in alternating order from cell to cell: the forwarder as
a subprocess with its default durability (FORWARDER_BUFFER=disk, FORWARDER_FSYNC=batch), fed
pre-encoded events as fast as ZeroMQ takes them; and a loop of the same client with the same
producer settings sending the same values, keys and headers. Throughput is counted by a consumer
in a process of its own, reading the topic as it fills: events from the first send to the moment
it has read every event id once. CPU seconds per 100,000 events: the forwarder process, or the
benchmark process running the raw loop (the client's own threads included).
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

import zmq
from confluent_kafka import Consumer, Producer, TopicPartition
from kafka import KafkaProducer

from bench.end_to_end import cpu_s, envelope, forwarder, stats
from emitter.contract import encode_envelope
from forwarder.record import kafka_record
from forwarder.sinks.kafka import producer_config
from forwarder.sinks.kafka_confluent import producer_config as confluent_config
from forwarder.sinks.settings import KafkaSettings
from harness.broker import KafkaBroker

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
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "bench-matrix",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 5,
            "topic.metadata.refresh.interval.ms": 200,
        }
    )
    print("ready", flush=True)
    deadline = time.monotonic() + CONSUMER_TIMEOUT_S
    while True:
        partitions = consumer.list_topics(topic, timeout=5).topics[topic].partitions
        if partitions:
            break
        if time.monotonic() > deadline:
            print(json.dumps({"error": f"topic {topic} never appeared"}))
            return
        time.sleep(0.01)
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    seen: set[str | bytes] = set()
    duplicates = 0
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
    done = time.time()
    consumer.close()
    print(json.dumps({"all_seen": done, "distinct": len(seen), "duplicates": duplicates}))


def forwarder_run(servers: str, run_dir: Path, cell: Cell, extra: dict[str, str]) -> Run:
    client, settings, keys, count = cell.client, cell.env | extra, cell.keys, cell.events
    frames = [encode_envelope(envelope(n, keys)) for n in range(count)]
    topic = f"fwd-{run_dir.name}"
    with forwarder(
        run_dir,
        ORDER_EVENT_MODE="KAFKA",
        KAFKA_CLIENT=client,
        KAFKA_BOOTSTRAP_SERVERS=servers,
        KAFKA_ORDER_EVENTS_TOPIC=topic,
        **settings,
    ) as process:
        context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        push = context.socket(zmq.PUSH)
        push.setsockopt(zmq.SNDHWM, 0)
        push.connect(process.env["FORWARDER_ENDPOINT"])
        # Like the raw loop's warm-up record: the producer is connected and the topic exists.
        push.send(encode_envelope(envelope(count, keys)))
        stats(process, until=lambda s: s.sinks["kafka"].delivered >= 1)
        pid = process.pid
        with counting(servers, topic, count + 1) as consumer:
            cpu_before = cpu_s(pid)
            started = time.time()
            for frame in frames:
                push.send(frame)
            result = counted(consumer)
            cpu = cpu_s(pid) - cpu_before
        push.close(linger=0)
        context.term()
    return Run(count / (result["all_seen"] - started), cpu / count * 100_000, result["duplicates"])


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
            cpu_before, started = process_cpu_s(), time.time()
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
            cpu_before, started = process_cpu_s(), time.time()
            for value, key, headers in records:
                kafka_producer.send(topic, value=value, key=key, headers=headers)
            kafka_producer.flush()
        cpu = process_cpu_s() - cpu_before
        result = counted(consumer)
        if client != "confluent":
            kafka_producer.close()
    return Run(count / (result["all_seen"] - started), cpu / count * 100_000, result["duplicates"])


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
                runs: dict[str, list[Run]] = {"forwarder": [], "raw": []}
                for round_ in range(args.rounds):
                    tag = f"{number}-{round_}"
                    # The in-memory broker grows with every run: alternate which goes first.
                    for kind in sorted(runs, reverse=(number + round_) % 2 == 1):
                        if kind == "raw":
                            run = raw_run(servers, f"raw-{tag}", cell)
                        else:
                            (root / tag).mkdir()
                            run = forwarder_run(servers, root / tag, cell, extra)
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
    fwd, raw = runs["forwarder"], runs["raw"]
    ratios = [f.rate / r.rate for f, r in zip(fwd, raw, strict=True)]
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
        "duplicates": sum(r.duplicates for r in fwd),
        "target": TARGETS[cell.client],
    }


def print_row(figures: dict[str, Any], *, header: bool) -> None:
    if header:
        print(
            "\n| client | producer settings | keys | forwarder events/s | raw events/s | ratio "
            "| target | met | CPU s/100k forwarder | CPU s/100k raw |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
    met = "yes" if figures["ratio"] >= figures["target"] else "no"
    print(
        f"| {figures['client']} | {figures['settings']} | {figures['keys']:,} "
        f"| {figures['forwarder']:,.0f} | {figures['raw']:,.0f} | {figures['ratio']:.2f} "
        f"| >= {figures['target']} | {met} | {figures['forwarder_cpu_per_100k']:.2f} "
        f"| {figures['raw_cpu_per_100k']:.2f} |",
        flush=True,
    )


def chart(rows: list[dict[str, Any]], out: Path) -> None:
    import matplotlib  # noqa: PLC0415 - only for --chart

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 - after choosing the backend

    figure, axes = plt.subplots(figsize=(12, 6))
    labels = [f"{r['client']}\n{r['settings']}\n{r['keys']} keys" for r in rows]
    colour = {"kafka-python": "tab:blue", "confluent": "tab:orange"}
    axes.bar(
        range(len(rows)), [r["ratio"] for r in rows], color=[colour[r["client"]] for r in rows]
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
