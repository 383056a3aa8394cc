"""ORDER_EVENT_MODE switched and switched back loses nothing: each event goes to the sinks that
were configured when it arrived, and to no other."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Mapping
from typing import Any

import pytest

from emitter.publisher import publisher_from_env
from harness.broker import consume
from harness.browser import browser_tab
from harness.forwarder import ForwarderProcess, forwarder_env, run_cli
from harness.net import free_port
from harness.relay_app import RelayServer

pytestmark = pytest.mark.integration

SECRET = "mode-switch-relay-secret-0123456789"


def start(forwarders, env: Mapping[str, str]) -> ForwarderProcess:
    process = ForwarderProcess(env)
    forwarders.append(process)
    return process.start()


def publish(process: ForwarderProcess, numbers: range) -> None:
    publisher = publisher_from_env({"FORWARDER_ENDPOINT": process.env["FORWARDER_ENDPOINT"]})
    try:
        for n in numbers:
            assert publisher.emit("order_event", {"orderid": f"ORD{n}", "n": n}, user_id="alice")
    finally:
        publisher.close()


def stats(process: ForwarderProcess) -> dict[str, Any]:
    result = run_cli("stats", "--json", env=process.env)
    assert result.returncode == 0, result.stderr
    snapshot: dict[str, Any] = json.loads(result.stdout)
    return snapshot


def wait_for_held(process: ForwarderProcess, sink: str, count: int) -> dict[str, Any]:
    for _ in range(300):
        snapshot = stats(process)
        if snapshot["received"] >= count and snapshot["sinks"][sink]["waiting"] == count:
            return snapshot
        time.sleep(0.1)
    pytest.fail(f"{sink} never held {count} events:\n{process.output()[-3000:]}")


def test_events_held_for_kafka_reach_kafka_after_a_socketio_spell_and_never_the_browser(
    tmp_path, forwarders, proxied_broker, topic
):
    """KAFKA with the broker away, then SOCKETIO with a live relay, then KAFKA again."""
    broker, proxy = proxied_broker
    proxy.refuse()
    base = forwarder_env(
        tmp_path,
        KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap,
        KAFKA_ORDER_EVENTS_TOPIC=topic,
        KAFKA_PRODUCER_REQUEST_TIMEOUT_MS="2000",
        FORWARDER_SHUTDOWN_TIMEOUT_S="1",
        SOCKETIO_RELAY_SECRET=SECRET,
    )
    kafka_only = base | {"ORDER_EVENT_MODE": "KAFKA"}
    first = start(forwarders, kafka_only)
    publish(first, range(200))
    wait_for_held(first, "kafka", 200)
    first.terminate()
    assert first.wait(30) == 0

    metrics_port = free_port()
    with RelayServer(SECRET, tmp_path / "server.log") as server:
        socketio_only = base | {
            "ORDER_EVENT_MODE": "SOCKETIO",
            "SOCKETIO_URL": server.url,
            "FORWARDER_METRICS_ADDR": f"127.0.0.1:{metrics_port}",
        }
        with browser_tab(server.url) as browser:
            second = start(forwarders, socketio_only)
            [warning] = second.logs("waiting_for_unconfigured_sink")
            assert (warning["level"], warning["sinks"]) == ("warning", {"kafka": 200})
            publish(second, range(200, 250))
            browser.wait_for(50)
            kept = stats(second)["sinks"]["kafka"]
            assert (kept["configured"], kept["waiting"]) == (False, 200)
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            with opener.open(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
                metrics = response.read().decode()
            assert 'openalgo_forwarder_sink_waiting_events{sink="kafka"} 200.0' in metrics
            check = run_cli("check", env=socketio_only)
            [line] = [text for text in check.stdout.splitlines() if " buffer:" in text]
            assert "kafka 200, not in ORDER_EVENT_MODE" in line
            second.terminate()
            assert second.wait(30) == 0
            assert [payload["n"] for _, payload in browser.events()] == list(range(200, 250))

    proxy.heal()
    third = start(forwarders, kafka_only)
    assert third.wait_for_log("forwarder_started")["waiting"] == {"kafka": 200}
    assert third.logs("waiting_for_unconfigured_sink") == []
    publish(third, range(250, 260))
    records = consume(broker.bootstrap, topic, 210, timeout=60)
    delivered = [
        json.loads(record.value)["data"]["n"]
        for record in sorted(records, key=lambda r: (r.partition, r.offset))
    ]
    assert delivered == [*range(200), *range(250, 260)]
