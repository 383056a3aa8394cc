"""End to end: emitter processes -> the forwarder as a subprocess -> the embedded Kafka broker.

Every test runs once with each Kafka client library (KAFKA_CLIENT).
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime

import pytest
import zmq

from emitter.contract import encode_envelope
from emitter.publisher import publisher_from_env
from harness.broker import consume
from harness.events import numbered, push_frames, pusher
from harness.forwarder import ForwarderProcess, forwarder_env
from tests.support.frames import GARBAGE, emitting_processes, publish_orders

pytestmark = pytest.mark.integration


def start(forwarders, tmp_path, bootstrap: str, topic: str, **settings: str) -> ForwarderProcess:
    env = forwarder_env(
        tmp_path,
        ORDER_EVENT_MODE="KAFKA",
        KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        KAFKA_ORDER_EVENTS_TOPIC=topic,
        **settings,
    )
    process = ForwarderProcess(env)
    forwarders.append(process)
    return process.start()


def by_offset(records) -> list:
    return sorted(records, key=lambda r: (r.partition, r.offset))


class TestForwarderToKafka:
    def test_every_event_arrives_once_exactly_as_emitted(
        self, tmp_path, kafka_bootstrap, topic, forwarders, kafka_client
    ):
        """Value, key and headers are the documented ones; each user's events keep their order."""
        process = start(forwarders, tmp_path, kafka_bootstrap, topic, KAFKA_CLIENT=kafka_client)
        users = ["alice", "bob", "carol"]
        before = datetime.now(UTC)
        publisher = publisher_from_env({"FORWARDER_ENDPOINT": process.env["FORWARDER_ENDPOINT"]})
        try:
            for seq in range(300):
                user = users[seq % 3]
                assert publisher.publish_order_event(
                    user, "SBIN-EQ", "BUY", f"ORD{seq}", "live", exchange="NSE", seq=seq
                )
            assert publisher.publish_master_contract_download(
                "zerodha", "success", "Master contract downloaded", symbols_count=10
            )
        finally:
            publisher.close()
        records = consume(kafka_bootstrap, topic, 301, timeout=30)
        after = datetime.now(UTC)

        assert len(records) == 301
        values = [json.loads(record.value) for record in records]
        assert len({value["event_id"] for value in values}) == 301
        for record, value in zip(records, values, strict=True):
            assert record.key == value["user_id"].encode()
            assert record.headers == [
                ("event_type", value["event_type"].encode()),
                ("event_id", value["event_id"].encode()),
            ]
            assert value["topic"] is None
            assert value["timestamp"].endswith("Z")
            assert before <= datetime.fromisoformat(value["timestamp"]) <= after
        orders = {v["data"]["seq"]: v for v in values if v["event_type"] == "order_event"}
        for seq, value in orders.items():
            assert {k: v for k, v in value.items() if k not in {"timestamp", "event_id"}} == {
                "event_type": "order_event",
                "topic": None,
                "user_id": users[seq % 3],
                "source": "openalgo",
                "version": "1.0",
                "data": {
                    "symbol": "SBIN-EQ",
                    "action": "BUY",
                    "orderid": f"ORD{seq}",
                    "mode": "live",
                    "exchange": "NSE",
                    "seq": seq,
                },
            }
        [system] = [v for v in values if v["event_type"] == "master_contract_download"]
        assert system["user_id"] == "admin"
        assert system["data"]["symbols_count"] == 10
        per_key = defaultdict(list)
        for record in by_offset(records):
            value = json.loads(record.value)
            if value["event_type"] == "order_event":
                per_key[record.key].append(value["data"]["seq"])
        assert {key: seqs == sorted(seqs) for key, seqs in per_key.items()} == {
            user.encode(): True for user in users
        }

    def test_three_emitting_processes_at_once(
        self, tmp_path, kafka_bootstrap, topic, forwarders, kafka_client
    ):
        """Every event of each of three gunicorn-like workers arrives once, in its order."""
        process = start(forwarders, tmp_path, kafka_bootstrap, topic, KAFKA_CLIENT=kafka_client)
        endpoint = process.env["FORWARDER_ENDPOINT"]
        calls = [(endpoint, f"worker{n}", 200) for n in range(3)]
        with emitting_processes(publish_orders, calls) as emitters:
            pass
        assert [emitter.returncode for emitter in emitters] == [0, 0, 0]
        records = consume(kafka_bootstrap, topic, 600, timeout=30)
        assert len(records) == 600
        per_key = defaultdict(list)
        for record in by_offset(records):
            per_key[record.key].append(json.loads(record.value)["data"]["seq"])
        assert per_key == {f"worker{n}".encode(): list(range(200)) for n in range(3)}

    def test_a_broker_that_comes_up_later_gets_everything(
        self, tmp_path, kafka_broker, topic, forwarders, kafka_client
    ):
        """Events keep being received while the broker is absent, and all are delivered later."""
        kafka_broker.stop()
        process = start(
            forwarders,
            tmp_path,
            kafka_broker.bootstrap,
            topic,
            KAFKA_CLIENT=kafka_client,
            KAFKA_PRODUCER_REQUEST_TIMEOUT_MS="2000",
            FORWARDER_STATS_INTERVAL_S="1",
        )
        started = time.monotonic()
        endpoint = process.env["FORWARDER_ENDPOINT"]
        publish_orders(endpoint, "early", 50)
        process.wait_for_log("sink_retry", timeout=30, sink="kafka")
        publish_orders(endpoint, "during", 50)
        stats = process.wait_for_log("stats", timeout=30, received=100)
        assert stats["sinks"]["kafka"]["delivered"] == 0
        time.sleep(max(0.0, started + 10 - time.monotonic()))
        kafka_broker.start()
        records = consume(kafka_broker.bootstrap, topic, 100, timeout=60)
        per_key = defaultdict(list)
        for record in by_offset(records):
            per_key[record.key].append(json.loads(record.value)["data"]["seq"])
        assert per_key == {b"early": list(range(50)), b"during": list(range(50))}
        process.terminate()
        assert process.wait(30) == 0
        stopped = process.wait_for_log("forwarder_stopped")
        assert stopped["sinks"]["kafka"]["dropped"] == 0
        assert stopped["waiting"] == {"kafka": 0}

    def test_garbage_frames_are_dead_lettered_and_the_rest_delivered(
        self, tmp_path, kafka_bootstrap, topic, forwarders, kafka_client
    ):
        """Bad frames land in the dead-letter file and the counters; valid ones reach Kafka."""
        process = start(forwarders, tmp_path, kafka_bootstrap, topic, KAFKA_CLIENT=kafka_client)
        frames = []
        for n, bad in enumerate(GARBAGE):
            frames += [encode_envelope(numbered(k)) for k in range(n * 25, n * 25 + 25)] + [bad]
        push_frames(process.env["FORWARDER_ENDPOINT"], frames)
        records = consume(kafka_bootstrap, topic, 100, timeout=30)
        assert [json.loads(r.value)["event_id"] for r in by_offset(records)] == [
            f"ev-{k:06d}" for k in range(100)
        ]
        process.terminate()
        assert process.wait(30) == 0
        stopped = process.wait_for_log("forwarder_stopped")
        assert (stopped["received"], stopped["decode_failures"]) == (104, len(GARBAGE))
        lines = (tmp_path / "state" / "dead-letters.jsonl").read_text().splitlines()
        assert [base64.b64decode(json.loads(line)["raw"]) for line in lines] == GARBAGE
        assert process.logs("frame_dead_lettered")

    def test_sigterm_while_events_flow_delivers_everything_received(
        self, tmp_path, kafka_bootstrap, topic, forwarders, kafka_client
    ):
        """Status 0 within the shutdown timeout, and every event it took in is in Kafka."""
        process = start(
            forwarders,
            tmp_path,
            kafka_bootstrap,
            topic,
            KAFKA_CLIENT=kafka_client,
            FORWARDER_SHUTDOWN_TIMEOUT_S="15",
        )
        stop_sending = threading.Event()
        sent = []

        def send() -> None:
            with pusher(process.env["FORWARDER_ENDPOINT"], linger_ms=0) as push:
                for n in range(100_000):
                    frame = encode_envelope(numbered(n))
                    while not stop_sending.is_set():
                        try:
                            push.send(frame, zmq.NOBLOCK)
                            break
                        except zmq.Again:
                            stop_sending.wait(0.01)
                    if stop_sending.is_set():
                        return
                    sent.append(n)
                    stop_sending.wait(0.0005)

        sender = threading.Thread(target=send)
        sender.start()
        try:
            while len(sent) < 1500 and sender.is_alive():
                time.sleep(0.01)
            process.terminate()
            assert process.wait(30) == 0
        finally:
            stop_sending.set()
            sender.join(30)
        assert not sender.is_alive()
        stopped = process.wait_for_log("forwarder_stopped")
        received = stopped["received"]
        assert received >= 1000
        assert stopped["waiting"] == {"kafka": 0}
        records = consume(kafka_bootstrap, topic, received, timeout=30)
        assert [json.loads(r.value)["event_id"] for r in by_offset(records)] == [
            f"ev-{k:06d}" for k in range(received)
        ]
