"""Write a scratch app laid out like OpenAlgo, to try docs/openalgo.md's steps before your own.

    python docs/scratch_openalgo.py /tmp/scratch-openalgo

It has OpenAlgo's shape where the guide touches it, written for this purpose: `extensions.py`
creates the `SocketIO` object; `utils/event_bus.py` is a bus with `subscribe`, `unsubscribe`
and `publish` on a thread pool; `subscribers/__init__.py` has `register_all()` subscribing a log
subscriber and `socketio_subscriber` to order topics; a broker module imports `socketio` at import
time and emits `master_contract_download`; `blueprints/auth.py` emits `force_logout`; `app.py`
calls `socketio.init_app(app)` then `register_all()` inside `create_app()`, and gunicorn serves
`app:app`. A few `/scratch/...` routes stand in for a broker login, a logout and an order.
"""

from __future__ import annotations

import sys
from pathlib import Path

FILES: dict[str, str] = {
    "extensions.py": """\
from flask_socketio import SocketIO

socketio = SocketIO(
    cors_allowed_origins="*", async_mode="threading", ping_timeout=60, ping_interval=25
)
""",
    "utils/__init__.py": "",
    "utils/event_bus.py": """\
import threading
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass


@dataclass
class Event:
    topic: str = ""


class EventBus:
    def __init__(self, workers=10):
        self._subscribers = defaultdict(list)
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="eventbus")

    def subscribe(self, topic, callback, name=""):
        with self._lock:
            self._subscribers[topic].append(callback)

    def unsubscribe(self, topic, callback):
        with self._lock:
            try:
                self._subscribers[topic].remove(callback)
            except ValueError:
                pass

    def publish(self, event):
        with self._lock:
            callbacks = list(self._subscribers.get(event.topic, []))
        for callback in callbacks:
            self._executor.submit(callback, event)


bus = EventBus()
""",
    "events/__init__.py": "",
    "events/order_events.py": """\
from dataclasses import dataclass, field

from utils.event_bus import Event


@dataclass
class OrderEvent(Event):
    mode: str = "live"
    api_type: str = ""
    request_data: dict = field(default_factory=dict)
    response_data: dict = field(default_factory=dict)
    api_key: str = ""


@dataclass
class OrderPlacedEvent(OrderEvent):
    topic: str = "order.placed"
    strategy: str = ""
    symbol: str = ""
    exchange: str = ""
    action: str = ""
    quantity: int = 0
    pricetype: str = ""
    product: str = ""
    orderid: str = ""


@dataclass
class OrderFailedEvent(OrderEvent):
    topic: str = "order.failed"
    symbol: str = ""
    exchange: str = ""
    error_message: str = ""
""",
    "subscribers/__init__.py": """\
from subscribers import log_subscriber, socketio_subscriber
from utils.event_bus import bus


def register_all():
    bus.subscribe("order.placed", log_subscriber.on_order_placed, "log:order_placed")
    bus.subscribe("order.placed", socketio_subscriber.on_order_placed, "socketio:order_placed")
    bus.subscribe("order.failed", log_subscriber.on_order_failed, "log:order_failed")
    bus.subscribe("order.failed", socketio_subscriber.on_order_failed, "socketio:order_failed")
""",
    "subscribers/log_subscriber.py": """\
import logging

logger = logging.getLogger(__name__)


def on_order_placed(event):
    logger.info("order placed: %s %s", event.symbol, event.orderid)


def on_order_failed(event):
    logger.info("order failed: %s %s", event.symbol, event.error_message)
""",
    "subscribers/socketio_subscriber.py": """\
from extensions import socketio


def on_order_placed(event):
    if event.mode == "analyze":
        _emit_analyzer_update(event)
    else:
        socketio.emit(
            "order_event",
            {
                "symbol": event.symbol,
                "action": event.action,
                "orderid": event.orderid,
                "exchange": event.exchange,
                "price_type": event.pricetype,
                "product_type": event.product,
                "mode": "live",
            },
        )


def on_order_failed(event):
    if event.mode == "analyze":
        _emit_analyzer_update(event)


def _emit_analyzer_update(event):
    payload = {"request": event.request_data, "response": event.response_data}
    socketio.emit("analyzer_update", payload)
""",
    "database/__init__.py": "",
    "database/auth_db.py": """\
import os


def get_username_by_apikey(provided_api_key):
    return "admin" if provided_api_key == os.environ.get("SCRATCH_API_KEY") else None
""",
    "broker/__init__.py": "",
    "broker/zerodha/__init__.py": "",
    "broker/zerodha/database/__init__.py": "",
    "broker/zerodha/database/master_contract_db.py": """\
from extensions import socketio  # Import SocketIO


def master_contract_download():
    return socketio.emit(
        "master_contract_download", {"status": "success", "message": "Successfully Downloaded"}
    )
""",
    "blueprints/__init__.py": "",
    "blueprints/auth.py": """\
from flask import Blueprint

from extensions import socketio

auth_bp = Blueprint("auth", __name__)


@auth_bp.post("/scratch/force-logout")
def force_logout():
    socketio.emit("force_logout", {"reason": "password_changed", "message": "Please log in again"})
    return "ok"
""",
    "app.py": """\
import logging
import os

from flask import Flask, request

from blueprints.auth import auth_bp
from broker.zerodha.database import master_contract_db
from events.order_events import OrderFailedEvent, OrderPlacedEvent
from extensions import socketio
from utils.event_bus import bus

logging.basicConfig(level=logging.INFO)


def create_app():
    app = Flask(__name__)

    # Initialize SocketIO
    socketio.init_app(app)  # Link SocketIO to the Flask app

    # Initialize EventBus subscribers
    from subscribers import register_all as register_event_subscribers

    register_event_subscribers()

    app.register_blueprint(auth_bp)

    @app.post("/scratch/master-contract")
    def download():
        master_contract_db.master_contract_download()
        return "ok"

    @app.post("/scratch/order")
    def order():
        placed = request.args.get("outcome", "placed") == "placed"
        common = {
            "mode": request.args.get("mode", "live"),
            "api_type": "placeorder",
            "request_data": {"apikey": os.environ["SCRATCH_API_KEY"], "symbol": "SBIN"},
            "api_key": os.environ["SCRATCH_API_KEY"],
            "symbol": "SBIN",
            "exchange": "NSE",
        }
        if placed:
            event = OrderPlacedEvent(
                **common, strategy="s1", action="BUY", quantity=10, pricetype="MARKET",
                product="MIS", orderid=request.args.get("orderid", "1"),
                response_data={"status": "success", "orderid": request.args.get("orderid", "1")},
            )
        else:
            event = OrderFailedEvent(**common, error_message="insufficient margin")
        bus.publish(event)
        return "ok"

    return app


app = create_app()
""",
}


def write_scratch_app(target: Path) -> Path:
    """Write the files under `target` (created if needed) and return it."""
    for relative, text in FILES.items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return target


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python docs/scratch_openalgo.py DIRECTORY")
    print(write_scratch_app(Path(sys.argv[1])))
