"""The forwarder end to end on the embedded broker: throughput against the raw client, latency at
1,000 events/s to Kafka and to a browser tab, and what the idle daemon costs.

Run:  .venv/bin/python -m bench.end_to_end            (about a minute and a half)
      .venv/bin/python -m bench.end_to_end --quick    (a smoke run of about half a minute)

Throughput, for each Kafka client (kafka-python, confluent): N pre-encoded events pushed as fast
as ZeroMQ takes them into a forwarder subprocess (ORDER_EVENT_MODE=KAFKA, acks=all, idempotent,
every other setting at its default), timed from after one warm-up event was delivered until its
stats say all were acknowledged; beside it, a raw producer loop of the same client with the same
producer settings sending the same values, keys and headers, timed from after one warm-up record
until flush() returns. Latency: the real
emitter publishes at 1,000 events/s into a forwarder in SOCKETIO,KAFKA mode; emit to broker
acknowledgement is the age of each batch's oldest event when Kafka acknowledged it (from the
forwarder's `batch_delivered` lines), emit to browser the arrival time at a browser tab.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from confluent_kafka import Producer
from kafka import KafkaProducer

from emitter.contract import Envelope, encode_envelope
from emitter.publisher import EventPublisher, publisher_from_env
from forwarder.ops.control import ControlError, control_path, query
from forwarder.record import kafka_record
from forwarder.sinks.kafka import producer_config
from forwarder.sinks.kafka_confluent import producer_config as confluent_config
from forwarder.sinks.settings import KafkaSettings
from forwarder.stats import Snapshot
from harness import events
from harness.broker import KafkaBroker
from harness.browser import browser_tab
from harness.forwarder import ForwarderProcess, forwarder_env
from harness.relay_app import RelayServer
from harness.waits import wait_until

SECRET_LENGTH = 32
CLIENTS = ("kafka-python", "confluent")


def envelope(n: int, keys: int = 8) -> Envelope:
    """An order placed by one of `keys` users, numbered `n`."""
    return events.envelope(
        "order_event",
        {
            "symbol": "SBIN-EQ",
            "action": "BUY",
            "orderid": f"25010100{n:08d}",
            "exchange": "NSE",
            "price_type": "MARKET",
            "product_type": "MIS",
            "mode": "live",
        },
        id=f"bench-{n:08d}",
        topic="order.placed",
        user_id=f"user{n % keys}",
    )


@contextmanager
def forwarder(run_dir: Path, **settings: str) -> Iterator[ForwarderProcess]:
    """The daemon as a child process, its JSON log in run_dir/forwarder.log, read when asked."""
    process = ForwarderProcess(
        forwarder_env(run_dir, short_retries=False, FORWARDER_STATS_INTERVAL_S="0", **settings),
        grace_s=15,
        log_path=run_dir / "forwarder.log",
    )
    try:
        yield process.start()
    finally:
        process.stop()


def stats(
    process: ForwarderProcess, until: Callable[[Snapshot], bool], timeout: float = 300
) -> Snapshot:
    """Poll the control socket until `until(snapshot)` holds."""
    path = control_path(process.env["FORWARDER_ENDPOINT"], Path(process.env["FORWARDER_STATE_DIR"]))

    def reached() -> Snapshot | None:
        try:
            snapshot = query(path)
        except ControlError:
            return None
        return snapshot if until(snapshot) else None

    snapshot = wait_until(reached, timeout, what="the forwarder's stats", interval=0.1)
    assert snapshot is not None  # wait_until returns a true value only
    return snapshot


def forwarder_rate(bootstrap: str, run_dir: Path, count: int, client: str) -> float:
    frames = [encode_envelope(envelope(n)) for n in range(count)]
    with (
        forwarder(
            run_dir,
            ORDER_EVENT_MODE="KAFKA",
            KAFKA_CLIENT=client,
            KAFKA_BOOTSTRAP_SERVERS=bootstrap,
            KAFKA_ORDER_EVENTS_TOPIC=f"bench-fwd-{run_dir.name}",
        ) as process,
        events.pusher(process.env["FORWARDER_ENDPOINT"], linger_ms=0, hwm=0) as push,
    ):
        # Like the raw loop's warm-up record: the producer is connected and the topic exists.
        push.send(encode_envelope(envelope(count)))
        stats(process, until=lambda s: s.sinks["kafka"].delivered >= 1)
        started = time.perf_counter()
        for frame in frames:
            push.send(frame)
        stats(process, until=lambda s: s.sinks["kafka"].delivered >= count + 1)
        elapsed = time.perf_counter() - started
    return count / elapsed


def raw_rate(bootstrap: str, topic: str, count: int, client: str) -> float:
    """The client's own ceiling: a loop sending ready-made records with the forwarder's settings."""
    settings = KafkaSettings(bootstrap_servers=(bootstrap,), topic=topic)
    records = [envelope(n) for n in range(count)]
    values = [kafka_record(e) for e in records]
    if client == "confluent":
        producer: Any = Producer(confluent_config(settings))  # its stubs want other headers
        producer.produce(topic, b"warm-up")
        producer.flush(30)
        started = time.perf_counter()
        for value, key, headers in values:
            while True:
                try:
                    producer.produce(topic, value=value, key=key, headers=headers)
                    break
                except BufferError:
                    producer.poll(0.01)
            producer.poll(0)
        producer.flush(60)
        return count / (time.perf_counter() - started)
    kafka_producer = KafkaProducer(**producer_config(settings))
    kafka_producer.send(topic, b"warm-up").get(30)
    started = time.perf_counter()
    for value, key, headers in values:
        kafka_producer.send(topic, value=value, key=key, headers=headers)
    kafka_producer.flush()
    elapsed = time.perf_counter() - started
    kafka_producer.close()
    return count / elapsed


def latency(bootstrap: str, run_dir: Path, count: int, rate: float) -> dict[str, list[float]]:
    """Milliseconds: emit to Kafka acknowledgement (oldest of each batch), emit to browser."""
    secret = secrets.token_urlsafe(SECRET_LENGTH)
    with ExitStack() as stack:
        url = stack.enter_context(RelayServer(secret, run_dir / "app.log")).url
        process = stack.enter_context(
            forwarder(
                run_dir,
                ORDER_EVENT_MODE="SOCKETIO,KAFKA",
                KAFKA_BOOTSTRAP_SERVERS=bootstrap,
                KAFKA_ORDER_EVENTS_TOPIC=f"bench-lat-{run_dir.name}",
                SOCKETIO_URL=url,
                SOCKETIO_RELAY_SECRET=secret,
            )
        )
        tab = stack.enter_context(browser_tab(url))
        publisher = publisher_from_env({"FORWARDER_ENDPOINT": process.env["FORWARDER_ENDPOINT"]})
        warm_up = 100
        publish(publisher, 0, warm_up, rate)
        tab.wait_for(warm_up, timeout=60)
        stats(process, until=lambda s: s.sinks["kafka"].delivered >= warm_up)
        publish(publisher, warm_up, count, rate)
        publisher.close()
        events = tab.wait_for(count + warm_up, timeout=60)
        arrived = list(tab.arrived_ns)
        stats(process, until=lambda s: s.sinks["kafka"].delivered >= count + warm_up)
    browser = [(arrived[i] - payload["emit_ns"]) / 1e6 for i, (_, payload) in enumerate(events)][
        warm_up:
    ]
    kafka: list[float] = []
    for record in process.logs("batch_delivered"):
        if record.get("sink") == "kafka":
            kafka.extend([record["age_ms"]] * record["count"])
    return {"kafka": kafka[warm_up:], "browser": browser}


def publish(publisher: EventPublisher, first: int, count: int, rate: float) -> None:
    """Orders at a steady rate, each carrying its emit time for the browser's side."""
    started = time.perf_counter()
    for k in range(count):
        time.sleep(max(0.0, started + k / rate - time.perf_counter()))
        data = {"symbol": "SBIN-EQ", "orderid": f"ORD{first + k}", "emit_ns": time.time_ns()}
        publisher.emit("order_event", data, user_id="alice")


def idle_cost(bootstrap: str, run_dir: Path, seconds: float) -> tuple[float, float]:
    """RSS (MiB) and CPU (% of one core) of a forwarder with nothing to do."""
    with forwarder(
        run_dir,
        ORDER_EVENT_MODE="KAFKA",
        KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        KAFKA_ORDER_EVENTS_TOPIC=f"bench-idle-{run_dir.name}",
    ) as process:
        pid = process.pid
        time.sleep(2)
        before = cpu_s(pid)
        time.sleep(seconds)
        used = cpu_s(pid) - before
        return rss_mib(pid), used / seconds * 100


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def verdict(met: bool) -> str:
    return "yes" if met else "no"


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    count, rounds, latency_count, idle_s = (
        (20_000, 1, 1_000, 3.0) if args.quick else (100_000, 5, 5_000, 10.0)
    )
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        root = Path(tmp)
        with KafkaBroker() as broker:
            servers = broker.bootstrap
            rates: dict[str, dict[str, list[float]]] = {
                client: {"raw": [], "forwarder": []} for client in CLIENTS
            }
            for n in range(rounds):
                for client in CLIENTS:
                    run_dir = root / f"throughput-{client}-{n}"
                    run_dir.mkdir()
                    # The in-memory broker grows with every run: alternate which goes first.
                    for kind in sorted(("raw", "forwarder"), reverse=n % 2 == 1):
                        rate = (
                            raw_rate(servers, f"bench-raw-{client}-{n}", count, client)
                            if kind == "raw"
                            else forwarder_rate(servers, run_dir, count, client)
                        )
                        rates[client][kind].append(rate)
            lat_dir = root / "latency"
            lat_dir.mkdir()
            lat = latency(servers, lat_dir, latency_count, 1000.0)
            idle_dir = root / "idle"
            idle_dir.mkdir()
            rss, cpu = idle_cost(servers, idle_dir, idle_s)
    linger = KafkaSettings().linger_ms
    figures: dict[str, Any] = {
        "throughput": {
            client: {kind: statistics.median(values) for kind, values in by_kind.items()}
            for client, by_kind in rates.items()
        },
        "kafka_ms": {"p50": quantile(lat["kafka"], 0.5), "p99": quantile(lat["kafka"], 0.99)},
        "browser_ms": {
            "p50": quantile(lat["browser"], 0.5),
            "p99": quantile(lat["browser"], 0.99),
        },
        "idle_rss_mib": rss,
        "idle_cpu_percent": cpu,
    }
    print(f"\n{count:,} events per throughput run, median of {rounds}; latency over")
    print(f"{latency_count:,} events at 1,000/s after 100 warm-up; 2 cores, broker on them too\n")
    print("| measure | figure | target | met |")
    print("|---|---|---|---|")
    for client, pair in figures["throughput"].items():
        print(f"| raw {client} producer loop, acks=all | {pair['raw']:,.0f} events/s | | |")
        ratio = pair["forwarder"] / pair["raw"]
        target, met = ">= 90% of raw", verdict(ratio >= 0.9)
        if client == "confluent":
            target += "; >= 100,000 events/s"
            met += f"; {verdict(pair['forwarder'] >= 100_000)}"
        print(
            f"| emitter -> forwarder ({client}) -> broker, acks=all | "
            f"{pair['forwarder']:,.0f} events/s ({ratio:.0%} of raw) | {target} | {met} |"
        )
    kafka_ms, browser_ms = figures["kafka_ms"], figures["browser_ms"]
    print(
        f"| emit -> Kafka acknowledgement at 1,000/s | p50 {kafka_ms['p50']:.1f} ms, "
        f"p99 {kafka_ms['p99']:.1f} ms | p99 <= linger ({linger} ms) + 10 ms | "
        f"{verdict(kafka_ms['p99'] <= linger + 10)} |"
    )
    print(
        f"| emit -> browser tab at 1,000/s | p50 {browser_ms['p50']:.1f} ms, "
        f"p99 {browser_ms['p99']:.1f} ms | p99 <= 20 ms | {verdict(browser_ms['p99'] <= 20)} |"
    )
    rss_mb = rss * 1.048576
    print(f"| forwarder idle RSS | {rss:.1f} MiB | <= 60 MB | {verdict(rss_mb <= 60)} |")
    print(f"| forwarder idle CPU | {cpu:.2f} % of one core | | |")
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
