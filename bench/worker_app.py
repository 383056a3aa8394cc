"""A WSGI app that times publishes inside the gunicorn worker serving it, beside the floor.

Served as `bench.worker_app:create_app()`. `POST /measure?pattern=bursts|paced&count=N`, with
the form field `endpoint` saying where to publish, times N publishes and N floor calls in the
request's own thread (a green thread in an eventlet or gevent worker), alternating between the
two every burst (or every PACED_CHUNK paced calls) so both meet the same moments of a busy
machine. It answers each one's p50, p99, p99.9 and max in microseconds, how many returned False,
and the worker model the emitter detected.

`floor` is the least any design could cost: msgspec encoding of the same order event plus a
deque append, the deque drained every millisecond by a thread the app starts (green in a green
worker, so it never competes for the GIL). `publish` is `publish_order_event` through a fresh
`PushTransport` to `endpoint`, closed afterwards.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import flask

from bench.timing import BURST, Call, bursts, paced, quantile_us
from emitter.publisher import EventPublisher, encode_event
from emitter.transport import PushTransport

HWM = 10000
PACED_CHUNK = 250
"""Paced calls timed in a row before switching between the floor and the publish."""
ORDER = {"symbol": "SBIN-EQ", "action": "BUY", "orderid": "250101000012345", "mode": "live"}


@contextmanager
def floor() -> Iterator[Call]:
    """Encode and append; a thread of the app's own kind drains the deque every millisecond."""
    queue: collections.deque[bytes] = collections.deque()
    stop = threading.Event()

    def drain() -> None:
        while not stop.is_set():
            while queue:
                queue.popleft()
            time.sleep(0.001)

    drainer = threading.Thread(target=drain, daemon=True)
    drainer.start()

    def call() -> bool:
        frame = encode_event(
            "order_event",
            {**ORDER, "exchange": "NSE", "price_type": "MARKET", "product_type": "MIS"},
            user_id="trader1",
        )
        if len(queue) >= HWM:
            return False
        queue.append(frame)
        return True

    try:
        yield call
    finally:
        stop.set()
        drainer.join()


@contextmanager
def publish(endpoint: str) -> Iterator[tuple[Call, str | None]]:
    """The real publisher on a fresh transport, as the app would call it."""
    transport = PushTransport(endpoint, hwm=HWM, linger_ms=0)
    publisher = EventPublisher(transport)

    def call() -> bool:
        return publisher.publish_order_event(
            "trader1",
            ORDER["symbol"],
            ORDER["action"],
            ORDER["orderid"],
            ORDER["mode"],
            exchange="NSE",
            price_type="MARKET",
            product_type="MIS",
        )

    call()
    time.sleep(0.1)
    try:
        yield call, transport.model
    finally:
        publisher.close()


def summary(samples: list[int], refused: int) -> dict[str, float]:
    """Quantiles in microseconds, and how many calls returned False."""
    return {
        **{f"p{q * 100:g}": quantile_us(samples, q) for q in (0.5, 0.99, 0.999)},
        "max": max(samples) / 1e3,
        "refused": refused,
    }


def create_app() -> flask.Flask:
    """The app gunicorn serves."""
    app = flask.Flask(__name__)
    loops: dict[str, Callable[[Call, int], tuple[list[int], int]]] = {
        "bursts": bursts,
        "paced": paced,
    }

    @app.get("/ping")
    def ping() -> str:
        return "pong"

    @app.post("/measure")
    def measure() -> Any:
        pattern, count = flask.request.args["pattern"], int(flask.request.args["count"])
        loop, chunk = loops[pattern], BURST if pattern == "bursts" else PACED_CHUNK
        samples: dict[str, list[int]] = {"floor": [], "publish": []}
        refused = dict.fromkeys(samples, 0)
        with floor() as floor_call, publish(flask.request.form["endpoint"]) as (call, model):
            while len(samples["publish"]) < count:
                for name, timed in (("floor", floor_call), ("publish", call)):
                    chunk_samples, chunk_refused = loop(timed, chunk)
                    samples[name] += chunk_samples
                    refused[name] += chunk_refused
        return flask.jsonify(
            model=model, **{name: summary(samples[name], refused[name]) for name in samples}
        )

    return app
