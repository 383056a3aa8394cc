"""OpenAlgo as it really runs: one gunicorn eventlet (or gevent) worker, the forwarder, a browser.

The worker serves a Flask-SocketIO app set up as OpenAlgo's (tests.support.openalgo_app), with
the bus bridge registered and the relay installed, while orders are placed through it. With the
forwarder down and a queue of 50 events, far more is published than fits: the worker must keep
answering as fast as when the forwarder was up. When a forwarder starts again, a browser on `/`
must receive every event the emitter reported as queued, in that order.

With `--preload` the master builds the app, and publishes, before it forks the worker. gevent
with `--preload` is left out: there, Flask-SocketIO's threading mode never completes a WebSocket
handshake, with or without the emitter (the app is imported before gevent patches).
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from harness.browser import browser_tab
from harness.forwarder import ForwarderProcess, forwarder_env, running_forwarders
from harness.gunicorn import gunicorn
from harness.relay_app import SECRET_VARIABLE
from harness.waits import wait_until

pytestmark = pytest.mark.integration

SECRET = "gunicorn-relay-secret-0123456789"
APP = "tests.support.openalgo_app:create_app()"
PINGS = 300
PHASE_S = 2.0
HELD = 2 * 50
"""What the emitter can hold with EMITTER_SNDHWM=50: its queue, and as many in ZeroMQ's."""
ORDERS_PER_REQUEST = 20
ORDER_PAUSE_S = 0.005
"""About 2,000 orders a second: far more than fits while the forwarder is down, and CPU to spare."""
REQUEST_TIMEOUT_S = 10.0
DROPS_REPORTED = re.compile(r"events dropped: .*: (\d+) since the last warning")


def p99(samples: list[float]) -> float:
    return sorted(samples)[int(len(samples) * 0.99)]


def ping_latencies(url: str, what: str) -> list[float]:
    """Sequential `GET /ping` for PHASE_S, at least PINGS of them: each one's latency, seconds."""
    latencies: list[float] = []
    phase_ends = time.monotonic() + PHASE_S
    with requests.Session() as session:
        while len(latencies) < PINGS or time.monotonic() < phase_ends:
            started = time.perf_counter()
            try:
                session.get(f"{url}/ping", timeout=REQUEST_TIMEOUT_S).raise_for_status()
            except requests.Timeout:
                pytest.fail(f"the worker did not answer /ping within {REQUEST_TIMEOUT_S} s {what}")
            latencies.append(time.perf_counter() - started)
    return latencies


@contextmanager
def placing_orders(url: str, first_orderid: int) -> Iterator[None]:
    """A client placing orders, ORDERS_PER_REQUEST a request, until the block ends."""
    stop = threading.Event()
    failures: list[BaseException] = []

    def place() -> None:
        orderid = first_orderid
        with requests.Session() as session:
            while not stop.is_set():
                try:
                    session.post(
                        f"{url}/orders",
                        params={"start": orderid, "count": ORDERS_PER_REQUEST},
                        timeout=REQUEST_TIMEOUT_S,
                    ).raise_for_status()
                except requests.RequestException as exc:
                    failures.append(exc)
                    return
                orderid += ORDERS_PER_REQUEST
                stop.wait(ORDER_PAUSE_S)

    client = threading.Thread(target=place, name="placing-orders")
    client.start()
    try:
        yield
    finally:
        stop.set()
        client.join(REQUEST_TIMEOUT_S * 2)
    assert not failures, f"placing orders failed: {failures[0]!r}"


def app_environment(endpoint: str) -> dict[str, str]:
    """The test's environment without any emitter or forwarder setting, then the app's own."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("EMITTER_", "FORWARDER_", "KAFKA_", "SOCKETIO_"))
    }
    return env | {"FORWARDER_ENDPOINT": endpoint, "EMITTER_SNDHWM": "50", SECRET_VARIABLE: SECRET}


@pytest.mark.parametrize(
    ("worker_class", "preload"),
    [("eventlet", False), ("gevent", False), ("eventlet", True)],
    ids=["eventlet", "gevent", "eventlet-preload"],
)
def test_the_worker_keeps_answering_while_the_forwarder_is_down_and_nothing_queued_is_lost(
    tmp_path: Path, worker_class: str, preload: bool
):
    """A trivial route's p99 with the forwarder down stays within 2x of it with the forwarder up;
    afterwards the browser receives every queued event, in order."""
    settings = forwarder_env(tmp_path, ORDER_EVENT_MODE="SOCKETIO", SOCKETIO_RELAY_SECRET=SECRET)
    app_env = app_environment(settings["FORWARDER_ENDPOINT"])
    log_path = tmp_path / "gunicorn.log"
    with (
        gunicorn(worker_class, app_env, log_path, app=APP, preload=preload) as app,
        running_forwarders() as forwarders,
    ):
        settings["SOCKETIO_URL"] = app.url
        forwarders.append(ForwarderProcess(settings).start())
        with browser_tab(app.url) as browser:
            with placing_orders(app.url, 0):
                forwarder_up = ping_latencies(app.url, "with the forwarder up")
            delivered = app.emitter()["queued"]
            wait_until(lambda: len(browser.events()) >= len(delivered), 60, what="the first events")
            forwarders[0].stop()

            with placing_orders(app.url, 1_000_000):
                forwarder_down = ping_latencies(app.url, "with the forwarder down")
            state = app.emitter()

            forwarders.append(ForwarderProcess(settings).start())
            queued = state["queued"]
            received = browser.wait_for(len(queued), timeout=60)
            time.sleep(1)  # anything more would be a duplicate or an event never queued

        orderids = [payload["orderid"] for _, payload in browser.events()]
        stats = state["stats"]
        assert state["model"] == worker_class
        assert 0 < len(queued) - len(delivered) <= HELD
        assert stats["dropped"] > 10 * HELD
        # create_app()'s app_loaded event counts in the worker, unless the master built the app
        assert stats["queued"] == len(queued) + (not preload)
        assert p99(forwarder_down) <= 2 * p99(forwarder_up), (
            f"p99 /ping {p99(forwarder_down) * 1e3:.1f} ms with the forwarder down, "
            f"{p99(forwarder_up) * 1e3:.1f} ms with it up"
        )
        assert len(received) == len(queued)
        assert orderids == queued
    log = log_path.read_text(errors="replace")
    assert "Traceback" not in log
    # The worker's exit closed the publisher, which reported every drop not yet logged
    reported = [int(count) for count in DROPS_REPORTED.findall(log)]
    assert sum(reported) == stats["dropped"]
