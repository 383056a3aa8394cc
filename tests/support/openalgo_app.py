"""A Flask-SocketIO app set up as OpenAlgo is, for gunicorn to serve in the tests.

OpenAlgo's options (`async_mode="threading"` under gunicorn's eventlet worker, ping 60/25, CORS
open), an in-process event bus shaped like OpenAlgo's `utils/event_bus.py` (callbacks on a
10-thread pool, at most 1,000 pending), the bridge registered on it with `register(bus)`, and the
relay installed with the secret from SOCKETIO_RELAY_SECRET. Routes:

- `GET /ping`: the trivial route whose latency tells whether the worker is responsive.
- `POST /orders?start=S&count=N`: publishes N `order.placed` bus events, order ids S.. S+N-1.
- `GET /emitter`: the publisher's counters, the worker model the transport detected, and the
  order ids the bridge reported as queued, in the order it queued them.

`create_app()` publishes one `app_loaded` event, so under `--preload` the master process has used
the emitter before it forks the worker.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import flask
import flask_socketio

from emitter import get_event_publisher, openalgo
from emitter.relay import install_relay
from harness.relay_app import SECRET_VARIABLE

MAX_PENDING = 1000


@dataclasses.dataclass
class OrderPlaced:
    """The fields OpenAlgo's `order.placed` event carries."""

    orderid: str
    topic: str = "order.placed"
    mode: str = "live"
    api_type: str = "placeorder"
    request_data: dict[str, Any] = dataclasses.field(default_factory=dict)
    response_data: dict[str, Any] = dataclasses.field(default_factory=dict)
    api_key: str = "not-for-the-forwarder"
    strategy: str = "gunicorn-test"
    symbol: str = "SBIN-EQ"
    exchange: str = "NSE"
    action: str = "BUY"
    quantity: int = 1
    pricetype: str = "MARKET"
    product: str = "MIS"


class EventBus:
    """The bus's behaviour as OpenAlgo has it, plus a record of what the bridge queued.

    The record is taken on the bus thread right after the callback returned True, with nothing
    in between that could switch green threads, so its order is the order of the emitter's queue.
    """

    def __init__(self, workers: int = 10, max_pending: int = MAX_PENDING) -> None:
        self._subscribers: dict[str, list[Callable[[Any], Any]]] = {}
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="eventbus")
        self._max_pending = max_pending
        self._pending = 0
        self.dropped = 0
        self.queued: list[str] = []

    def subscribe(self, topic: str, callback: Callable[[Any], Any], name: str = "") -> None:
        with self._lock:
            self._subscribers.setdefault(topic, []).append(callback)

    def publish(self, event: Any) -> None:
        with self._lock:
            callbacks = list(self._subscribers.get(event.topic, ()))
        for callback in callbacks:
            with self._lock:
                admitted = self._pending < self._max_pending
                if admitted:
                    self._pending += 1
                else:
                    self.dropped += 1
            if admitted:
                self._executor.submit(self._call, callback, event)

    def _call(self, callback: Callable[[Any], Any], event: Any) -> None:
        try:
            if callback(event) is True:
                self.queued.append(event.orderid)
        finally:
            with self._lock:
                self._pending -= 1


def create_app() -> flask.Flask:
    """The app gunicorn serves (`tests.support.openalgo_app:create_app()`)."""
    app = flask.Flask(__name__)
    sio = flask_socketio.SocketIO(
        app, async_mode="threading", ping_timeout=60, ping_interval=25, cors_allowed_origins="*"
    )
    install_relay(sio, os.environ[SECRET_VARIABLE])
    bus = EventBus()
    openalgo.register(bus)

    @app.get("/ping")
    def ping() -> str:
        return "pong"

    @app.post("/orders")
    def orders() -> Any:
        start = int(flask.request.args["start"])
        count = int(flask.request.args["count"])
        for orderid in range(start, start + count):
            bus.publish(OrderPlaced(orderid=str(orderid)))
        return flask.jsonify(published=count)

    @app.get("/emitter")
    def emitter() -> Any:
        publisher = get_event_publisher()
        return flask.jsonify(
            stats=dataclasses.asdict(publisher.stats()),
            model=getattr(publisher.transport, "model", None),
            queued=list(bus.queued),
            bus_dropped=bus.dropped,
        )

    get_event_publisher().emit("app_loaded", {"pid": os.getpid()}, browser=False)
    return app
