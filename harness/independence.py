"""One sink dark, the other measured: the scenario behind the independence tests and benchmark.

The forwarder runs as a subprocess in SOCKETIO,KAFKA mode; the broker and the relay are each
reached through a fault proxy, and a browser tab listens on the relay server directly. Events are
published at a steady rate, each carrying its emit time. The timeline alternates a healthy stretch
with a dark one for each kind of darkness asked for, with a pause after each (the dark sink
catching up is not measured):

    warm-up | healthy | <kind 1> | recovery | healthy | <kind 2> | recovery | ...

It returns, per stretch, the delivery latency of every event the measured sink got that was
emitted in it: to the browser tab's arrival for the browser, to the broker's acknowledgement for
Kafka (the age of each batch's oldest event, from the forwarder's `batch_delivered` lines). The
forwarder's log goes to a file read at the end: the measuring process spends nothing on it.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from emitter.publisher import publisher_from_env
from harness.broker import KafkaBroker, unique_topic
from harness.browser import BrowserTab, browser_tab
from harness.forwarder import ForwarderProcess, forwarder_env
from harness.net import free_port
from harness.proxy import FaultProxy, fault_proxy
from harness.relay_app import RelayServer
from harness.waits import poll

__all__ = ["KINDS", "SLOW_S", "measure"]

KINDS = ("blackhole", "refuse", "slow")
SLOW_S = 0.5
"""How long the slow proxy holds each chunk, each way."""
HEALTHY = "healthy"


def measure(
    run_dir: Path,
    *,
    dark: str,
    kinds: Sequence[str] = KINDS,
    rate: float = 200,
    healthy_s: float = 3,
    dark_s: float = 3,
    recovery_s: float = 2,
    **settings: str,
) -> dict[str, list[float]]:
    """Latencies (ms) of the other sink per stretch while `dark` ('kafka' or 'relay') is dark."""
    with _rig(run_dir, **settings) as (process, browser, proxies):
        proxy = proxies[dark]
        stretches: list[tuple[str, int, int]] = []
        with _Paced(process.env["FORWARDER_ENDPOINT"], rate) as paced:
            time.sleep(2)
            for kind in kinds:
                stretches.append(_stretch(HEALTHY, healthy_s))
                started = time.time_ns()
                if kind == "slow":
                    proxy.delay(SLOW_S)
                else:
                    getattr(proxy, kind)()
                time.sleep(dark_s)
                stretches.append((kind, started, time.time_ns()))
                proxy.heal()
                time.sleep(recovery_s)
        if dark == "kafka":
            arrivals = _browser_latencies(browser, paced.published)
        else:
            arrivals = _kafka_latencies(process, paced.published)
        latencies: dict[str, list[float]] = defaultdict(list)
        for emitted, latency in arrivals:
            for name, start, end in stretches:
                if start <= emitted < end:
                    latencies[name].append(latency)
        return dict(latencies)


def _stretch(name: str, seconds: float) -> tuple[str, int, int]:
    started = time.time_ns()
    time.sleep(seconds)
    return name, started, time.time_ns()


@contextmanager
def _rig(
    run_dir: Path, **settings: str
) -> Iterator[tuple[ForwarderProcess, BrowserTab, dict[str, FaultProxy]]]:
    run_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(32)
    with ExitStack() as stack:
        port = free_port()
        kafka_proxy = stack.enter_context(fault_proxy(port))
        broker = stack.enter_context(KafkaBroker(port, advertised_port=kafka_proxy.port))
        server = stack.enter_context(RelayServer(secret, run_dir / "server.log"))
        relay_proxy = stack.enter_context(fault_proxy(server.port))
        browser = stack.enter_context(browser_tab(server.url))
        env = forwarder_env(
            run_dir,
            ORDER_EVENT_MODE="SOCKETIO,KAFKA",
            KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap,
            KAFKA_ORDER_EVENTS_TOPIC=unique_topic("independence"),
            KAFKA_PRODUCER_REQUEST_TIMEOUT_MS="2000",
            SOCKETIO_URL=f"http://{relay_proxy.address}",
            SOCKETIO_RELAY_SECRET=secret,
            SOCKETIO_ACK_TIMEOUT_S="2",
            FORWARDER_STATS_INTERVAL_S="0",
        )
        process = ForwarderProcess(env | settings, log_path=run_dir / "forwarder.log")
        stack.callback(process.stop)
        process.start()
        yield process, browser, {"kafka": kafka_proxy, "relay": relay_proxy}


class _Paced:
    """Publishes order events at a steady rate on a thread, each with its emit time."""

    def __init__(self, endpoint: str, rate: float) -> None:
        self._publisher = publisher_from_env({"FORWARDER_ENDPOINT": endpoint})
        self._interval = 1 / rate
        self._stop = threading.Event()
        self.published = 0
        self._thread = threading.Thread(target=self._run, name="paced-publisher")

    def _run(self) -> None:
        started = time.perf_counter()
        while not self._stop.is_set():
            time.sleep(max(0.0, started + self.published * self._interval - time.perf_counter()))
            data = {"symbol": "SBIN", "orderid": f"O{self.published}", "emit_ns": time.time_ns()}
            self._publisher.emit("order_event", data, user_id="alice")
            self.published += 1

    def __enter__(self) -> _Paced:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(30)
        self._publisher.close()


def _browser_latencies(browser: BrowserTab, published: int) -> list[tuple[int, float]]:
    """(emit ns, ms to the browser tab) of every event, once all arrived."""
    events = browser.wait_for(published, timeout=60)
    arrived = list(browser.arrived_ns)
    return [
        (payload["emit_ns"], (arrived[n] - payload["emit_ns"]) / 1e6)
        for n, (_, payload) in enumerate(events)
    ]


def _kafka_latencies(process: ForwarderProcess, published: int) -> list[tuple[int, float]]:
    """(emit ns, ms to the broker's acknowledgement) per event, from the batch lines: each event
    is counted at the age of its batch's oldest, an upper bound."""

    def kafka_lines() -> list[dict[str, Any]]:
        return [line for line in process.logs("batch_delivered") if line["sink"] == "kafka"]

    poll(lambda: sum(line["count"] for line in kafka_lines()) >= published, 60, interval=0.2)
    latencies = []
    for line in kafka_lines():
        acknowledged = _ns(line["timestamp"])
        oldest = acknowledged - int(line["age_ms"] * 1e6)
        latencies += [(oldest, float(line["age_ms"]))] * line["count"]
    return latencies


def _ns(timestamp: Any) -> int:
    return int(datetime.fromisoformat(str(timestamp).replace("Z", "+00:00")).timestamp() * 1e9)
