"""The forwarder subprocess relaying to a real Flask-SocketIO server, alone and beside Kafka."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from emitter import EventPublisher, EventPublisherFactory
from emitter.openalgo import register
from emitter.publisher import publisher_from_env
from harness.broker import consume
from harness.browser import browser_tab
from harness.forwarder import ForwarderProcess, forwarder_env
from harness.proxy import fault_proxy
from harness.relay_app import RelayServer
from tests.emitter.test_openalgo import (
    OPENALGO_TOPICS,
    Bus,
    expected_browser,
    expected_kafka_data,
    make_event,
)
from tests.emitter.test_openalgo import SECRET as SECRET_API_KEY
from tests.support.browser_events import BROWSER_EVENTS

pytestmark = pytest.mark.integration

SECRET = "forwarder-relay-secret-0123456789abcdef"


def start(forwarders, tmp_path, url: str, **settings: str) -> ForwarderProcess:
    defaults = {
        "ORDER_EVENT_MODE": "SOCKETIO",
        "SOCKETIO_URL": url,
        "SOCKETIO_RELAY_SECRET": SECRET,
    }
    env = forwarder_env(tmp_path, **(defaults | settings))
    process = ForwarderProcess(env)
    forwarders.append(process)
    return process.start()


@contextlib.contextmanager
def publisher_for(process: ForwarderProcess) -> Iterator[EventPublisher]:
    publisher = publisher_from_env({"FORWARDER_ENDPOINT": process.env["FORWARDER_ENDPOINT"]})
    try:
        yield publisher
    finally:
        publisher.close()


def numbered(n: int) -> dict[str, Any]:
    """An order event payload that says which one it is and when it was published."""
    return {"symbol": "SBIN", "action": "BUY", "orderid": f"ORD{n}", "n": n, "sent": time.time()}


def numbers(received: list[tuple[str, Any]]) -> list[int]:
    return [payload["n"] for _, payload in received]


class Paced:
    """Publishes numbered order events at a steady rate on a thread, as trading goes on."""

    def __init__(self, publisher: EventPublisher, first: int, count: int, rate: float) -> None:
        self._publisher = publisher
        self._range = range(first, first + count)
        self._interval = 1 / rate
        self.refused: list[int] = []
        self.published = 0
        self._thread = threading.Thread(target=self._run, name="paced-publisher")

    def _run(self) -> None:
        started = time.monotonic()
        for k, n in enumerate(self._range):
            time.sleep(max(0.0, started + k * self._interval - time.monotonic()))
            if not self._publisher.emit("order_event", numbered(n), user_id="alice"):
                self.refused.append(n)
            self.published += 1

    def __enter__(self) -> Paced:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._thread.join(120)

    def wait_until_published(self, count: int) -> None:
        while self.published < count and self._thread.is_alive():
            time.sleep(0.01)


class TestForwarderToBrowsers:
    def test_every_event_reaches_the_browser_identical_and_in_order(self, tmp_path, forwarders):
        """Event names and payloads exactly as published, in publishing order."""
        with (
            RelayServer(SECRET, tmp_path / "server.log") as server,
            browser_tab(server.url) as browser,
        ):
            process = start(forwarders, tmp_path, server.url)
            with publisher_for(process) as publisher:
                for event, data, user in BROWSER_EVENTS:
                    assert publisher.emit(event, data, user_id=user)
                assert publisher.emit("order_event", {"kafka": "only"}, browser=False)
                last = numbered(0)
                assert publisher.emit("order_event", last, user_id="alice")
                browser.wait_for(len(BROWSER_EVENTS) + 1)
                # delivered in order: a repeat of anything above would reach the browser first
                closing = numbered(1)
                assert publisher.emit("order_event", closing, user_id="alice")
                browser.wait_for(len(BROWSER_EVENTS) + 2)
            assert browser.events() == [
                *((event, data) for event, data, _ in BROWSER_EVENTS),
                ("order_event", last),
                ("order_event", closing),
            ]

    def test_one_publish_gives_kafka_the_whole_event_and_the_browser_todays_payload(
        self, tmp_path, forwarders, monkeypatch, kafka_bootstrap, topic
    ):
        """Every bus topic in both modes, each published once: Kafka's record is the whole event
        minus API keys, with its topic; the browser gets OpenAlgo's event or, for live
        failures, none."""
        with (
            RelayServer(SECRET, tmp_path / "server.log") as server,
            browser_tab(server.url) as browser,
        ):
            process = start(
                forwarders,
                tmp_path,
                server.url,
                ORDER_EVENT_MODE="SOCKETIO,KAFKA",
                KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
                KAFKA_ORDER_EVENTS_TOPIC=topic,
            )
            monkeypatch.setenv("FORWARDER_ENDPOINT", process.env["FORWARDER_ENDPOINT"])
            EventPublisherFactory.reset()
            try:
                bus = Bus()
                register(bus, env={"ORDER_EVENT_MODE": "SOCKETIO,KAFKA"})
                cases = [(t, mode) for mode in ("live", "analyze") for t in OPENALGO_TOPICS]
                for bus_topic, mode in cases:
                    bus.publish(make_event(bus_topic, mode, user_id="alice"))
            finally:
                EventPublisherFactory.reset()
            shown = [e for t, m in cases if (e := expected_browser(t, m)) is not None]
            assert len(shown) < len(cases)
            browser.wait_for(len(shown))
            records = consume(kafka_bootstrap, topic, len(cases), timeout=30)
            time.sleep(0.2)
            assert browser.events() == shown
        records = sorted(records, key=lambda r: r.offset)
        values = [json.loads(r.value) for r in records]
        assert len(values) == len(cases)
        for value, record, (bus_topic, mode) in zip(values, records, cases, strict=True):
            expected = expected_browser(bus_topic, mode)
            assert value["topic"] == bus_topic
            assert dict(record.headers)["topic"] == bus_topic.encode()
            assert value["event_type"] == (bus_topic if expected is None else expected[0])
            assert value["user_id"] == "alice"
            assert value["data"] == expected_kafka_data(bus_topic, mode)
            assert SECRET_API_KEY not in record.value.decode()

    def test_a_wrong_secret_relays_nothing_and_both_sides_say_so_without_it(
        self, tmp_path, forwarders
    ):
        wrong = "not-the-relay-secret-but-long-enough-0"
        with (
            RelayServer(SECRET, tmp_path / "server.log") as server,
            browser_tab(server.url) as browser,
        ):
            process = start(forwarders, tmp_path, server.url, SOCKETIO_RELAY_SECRET=wrong)
            with publisher_for(process) as publisher:
                assert publisher.emit("order_event", numbered(0), user_id="alice")
            refused = process.wait_for_log("relay_auth_refused", timeout=30)
            assert refused["level"] == "warning"
            process.wait_for_log("sink_retry", sink="socketio", attempt=2)
            server_log = server.log_text()
            assert browser.events() == []
        assert "relay connection refused" in server_log
        for text in (process.output(), server_log):
            assert wrong not in text
            assert SECRET not in text

    def test_a_server_restart_while_events_flow_loses_nothing_and_keeps_order(
        self, tmp_path, forwarders
    ):
        """The batch in flight is sent again to the new server; the browser sees every event.

        The forwarder reaches the app through a fault proxy that resets its connection, as the
        dying server does, and keeps it out until the browser has reconnected: a browser that is
        not connected misses events, with or without the forwarder.
        """
        total = 600
        with (
            RelayServer(SECRET, tmp_path / "server.log") as server,
            fault_proxy(server.port) as proxy,
        ):
            process = start(
                forwarders, tmp_path, f"http://{proxy.address}", FORWARDER_BATCH_MAX="20"
            )
            with contextlib.ExitStack() as browsers:
                before = browsers.enter_context(browser_tab(server.url))
                with publisher_for(process) as publisher, Paced(publisher, 0, total, 300) as paced:
                    paced.wait_until_published(200)
                    proxy.refuse()
                    time.sleep(0.3)
                    server.stop()
                    server.start()
                    after = browsers.enter_context(browser_tab(server.url))
                    paced.wait_until_published(400)
                    proxy.heal()
                assert paced.refused == []
                first = numbers(before.events())
                second = numbers(after.wait_for(total - 400, timeout=60))
                after.wait_for(total - second[0], timeout=60)
                second = numbers(after.events())
        assert first == list(range(len(first)))
        assert second == list(range(second[0], total))
        assert 150 <= second[0] <= len(first), "a gap or a late start across the restart"
        assert len(first) - second[0] <= 20, "more sent twice than one batch"
        assert process.logs("sink_retry")

    def test_an_event_too_large_for_any_relay_call_is_dead_lettered_between_two_that_arrive(
        self, tmp_path, forwarders
    ):
        """An event the app and the forwarder accept (150 KB, under their 256 and 320 KiB
        limits) but over what the relay's server takes (100,000 bytes here): refused for good,
        never retried, and the events on either side reach the browser."""
        with (
            RelayServer(SECRET, tmp_path / "server.log", max_http_buffer_size=100_000) as server,
            browser_tab(server.url) as browser,
        ):
            process = start(forwarders, tmp_path, server.url)
            with publisher_for(process) as publisher:
                assert publisher.emit("order_event", numbered(0), user_id="alice")
                big = numbered(1) | {"pad": "x" * 150_000}
                assert publisher.emit("order_event", big, user_id="alice")
                assert publisher.emit("order_event", numbered(2), user_id="alice")
            assert numbers(browser.wait_for(2)) == [0, 2]
            process.wait_for_log("frame_dead_lettered", sink="socketio")
        [letter] = [
            json.loads(line)
            for line in (tmp_path / "state" / "dead-letters.jsonl").read_text().splitlines()
        ]
        assert letter["sink"] == "socketio"
        assert "bytes on the wire" in letter["reason"]
        assert [line for line in process.logs("sink_retry") if line["sink"] == "socketio"] == []

    def test_2000_events_of_2_kb_held_through_a_10_s_relay_outage_all_arrive_in_order(
        self, tmp_path, forwarders
    ):
        """4 MB waiting when the relay comes back: sent in calls its server takes, in order."""
        total = 2000
        with (
            RelayServer(SECRET, tmp_path / "server.log") as server,
            fault_proxy(server.port) as proxy,
            browser_tab(server.url) as browser,
        ):
            process = start(forwarders, tmp_path, f"http://{proxy.address}")
            proxy.refuse()
            with publisher_for(process) as publisher:
                for n in range(total):
                    payload = numbered(n) | {"pad": "x" * 2000}
                    assert publisher.emit("order_event", payload, user_id="alice")
                    time.sleep(0.005)
            time.sleep(max(0.0, 10 - total * 0.005))
            proxy.heal()
            received = browser.wait_for(total, timeout=60)
            assert "too large" not in server.log_text()
        assert numbers(received) == list(range(total))
        connected = process.logs("relay_connected")
        assert connected[-1]["relay_max_bytes"] == 1_000_000
        assert connected[-1]["call_bytes"] == 262_144
