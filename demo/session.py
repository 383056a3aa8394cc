"""A trading session of two users, published through the real emitter as OpenAlgo publishes it.

Most events go through the seed's `publish_*` methods and `emit`; two come from OpenAlgo's event
bus through the bridge (`emitter.openalgo.register`), one of them a live order failure that only
Kafka receives, with the API key the bus event carries removed on the way.
"""

from __future__ import annotations

import dataclasses
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from demo.console import say
from emitter.openalgo import browser_event, register, without_api_keys
from emitter.publisher import EventPublisher

__all__ = ["Published", "trade"]

_PREFIX: Final = "trading app │ "
_API_KEYS: Final = {"demo-key-alice-1f0c": "alice", "demo-key-bob-77a2": "bob"}
"""Made-up keys: the bus events carry one, and neither Kafka nor the browser may ever see it."""


@dataclass(frozen=True)
class Published:
    """One event the trading app handed to the emitter, and what Kafka and the browser get."""

    event: str
    user_id: str | None
    data: dict[str, Any]
    browser: bool
    """False for events only Kafka receives (live failures the browser never heard of)."""
    kafka_data: dict[str, Any] | None = None
    """Kafka's `data` when it holds more than the browser's: the whole bus event."""

    @property
    def kafka(self) -> dict[str, Any]:
        """What Kafka's `data` holds."""
        return self.data if self.kafka_data is None else self.kafka_data


class _Bus:
    """OpenAlgo's event bus reduced to what the bridge uses; it calls back inline, not on a pool."""

    def __init__(self) -> None:
        self._subscribers: defaultdict[str, list[Callable[[Any], Any]]] = defaultdict(list)

    def subscribe(self, topic: str, callback: Callable[[Any], Any]) -> None:
        self._subscribers[topic].append(callback)

    def publish(self, event: Any) -> None:
        for callback in self._subscribers[event.topic]:
            callback(event)


@dataclass(frozen=True)
class _BusEvent:
    """What every OpenAlgo order event carries (events/base.py)."""

    topic: str
    mode: str
    api_type: str
    request_data: dict[str, Any]
    response_data: dict[str, Any]
    api_key: str


@dataclass(frozen=True)
class _OrderFailed(_BusEvent):
    """OpenAlgo's `order.failed` bus event, with the fields the bridge passes on to Kafka."""

    symbol: str
    exchange: str
    action: str
    quantity: int
    error_message: str


@dataclass(frozen=True)
class _OrderUpdate(_BusEvent):
    """OpenAlgo's `order.update` bus event: the broker reports an order's new status."""

    broker: str
    orderid: str
    symbol: str
    exchange: str
    action: str
    quantity: int
    price: float
    trigger_price: float
    pricetype: str
    product: str
    order_status: str
    filled_quantity: int
    pending_quantity: int
    average_price: float
    rejection_reason: str | None


class _Session:
    """Publishes each step, tells what the trader did, and records what should arrive where."""

    def __init__(self, publisher: EventPublisher, pace_s: float) -> None:
        self._publisher = publisher
        self._pace_s = pace_s
        self._bus = _Bus()
        register(self._bus, resolve_user=_API_KEYS.get)
        self.published: list[Published] = []

    def _record(self, user: str | None, what: str, item: Published) -> None:
        say(f"{_PREFIX}{user or 'system':<6} {item.event:<24} {what}")
        self.published.append(item)
        time.sleep(self._pace_s)

    def master_contract(self, broker: str, symbols: int, seconds: float) -> None:
        data = {
            "broker": broker,
            "status": "success",
            "message": "Master contract downloaded successfully",
            "symbols_count": symbols,
            "download_time_seconds": seconds,
        }
        self._publisher.publish_master_contract_download(**data)
        what = f"{broker} master contract: {symbols:,} symbols in {seconds} s"
        self._record(None, what, Published("master_contract_download", None, data, True))

    def place(self, user: str, what: str, **order: Any) -> None:
        data = {**order, "mode": "live"}
        self._publisher.publish_order_event(user, **data)
        self._record(user, what, Published("order_event", user, data, True))

    def emit(self, user: str, what: str, event: str, data: dict[str, Any]) -> None:
        self._publisher.emit(event, data, user_id=user)
        self._record(user, what, Published(event, user, data, True))

    def analyze(self, user: str, what: str, request: dict[str, Any], orderid: str) -> None:
        response = {"status": "success", "orderid": orderid, "mode": "analyze"}
        self._publisher.publish_analyzer_update(user, request, response)
        data = {"request": request, "response": response}
        self._record(user, what, Published("analyzer_update", user, data, True))

    def notify(self, user: str, what: str, symbol: str, message: str) -> None:
        data = {"symbol": symbol, "status": "info", "message": message}
        self._publisher.publish_order_notification(user, **data)
        self._record(user, what, Published("order_notification", user, data, True))

    def password_changed(self, user: str, what: str) -> None:
        extra = {"ip_address": "127.0.0.1", "user_agent": "Mozilla/5.0 (X11; Linux x86_64)"}
        self._publisher.publish_password_change(user, "success", "Password changed", **extra)
        data = {"user": user, "status": "success", "message": "Password changed", **extra}
        self._record(user, what, Published("password_change", user, data, True))

    def on_bus(self, what: str, event: _OrderFailed | _OrderUpdate) -> None:
        """Through OpenAlgo's bus: the browser's event, or the event's fields for Kafka alone."""
        user = _API_KEYS[event.api_key]
        shaped = browser_event(event)
        fields = without_api_keys(dataclasses.asdict(event))
        if shaped is None:
            item = Published(event.topic, user, fields, False)
        else:
            name, payload = shaped
            whole = payload | {k: v for k, v in fields.items() if k not in payload}
            item = Published(name, user, payload, True, whole)
        self._bus.publish(event)
        self._record(user, what, item)


def trade(publisher: EventPublisher, *, pace_s: float) -> list[Published]:
    """Run the session; every event it published, in order, with where each should arrive."""
    s = _Session(publisher, pace_s)
    s.master_contract("zerodha", 98765, 11.8)
    s.place(
        "alice",
        "BUY 10 RELIANCE at market (NSE, MIS): order 250128000012345",
        symbol="RELIANCE",
        action="BUY",
        orderid="250128000012345",
        exchange="NSE",
        price_type="MARKET",
        product_type="MIS",
    )
    s.place(
        "bob",
        "SELL 25 INFY limit 1,890.50 (NSE, CNC): order 250128000012346",
        symbol="INFY",
        action="SELL",
        orderid="250128000012346",
        exchange="NSE",
        price_type="LIMIT",
        product_type="CNC",
    )
    s.on_bus("broker: RELIANCE order complete, 10 at 2,450.50", _reliance_complete())
    s.place(
        "alice",
        "BUY 50 SBIN limit 760.00 (NSE, MIS): order 250128000012347",
        symbol="SBIN",
        action="BUY",
        orderid="250128000012347",
        exchange="NSE",
        price_type="LIMIT",
        product_type="MIS",
    )
    s.emit(
        "alice",
        "modifies order 250128000012347: limit 758.50",
        "modify_order_event",
        {"status": "success", "orderid": "250128000012347", "mode": "live"},
    )
    s.emit(
        "bob",
        "cancels order 250128000012346",
        "cancel_order_event",
        {"status": "success", "orderid": "250128000012346", "mode": "live"},
    )
    basket = ("HDFCBANK", "ICICIBANK", "AXISBANK")
    for leg, symbol in enumerate(basket, start=1):
        orderid = f"25012800001236{leg}"
        s.place(
            "alice",
            f"basket {leg}/{len(basket)}: BUY 20 {symbol} (NSE, CNC): order {orderid}",
            symbol=symbol,
            action="BUY",
            orderid=orderid,
            exchange="NSE",
            price_type="MARKET",
            product_type="CNC",
            batch_order=True,
            is_last_order=leg == len(basket),
        )
    s.on_bus("BUY 1,800 NIFTY26JANFUT rejected: insufficient margin", _nifty_rejected())
    for orderid, symbol, quantity in (("ANL-0001", "TATAMOTORS", 100), ("ANL-0002", "ITC", 400)):
        s.analyze(
            "bob",
            f"analyzer mode: BUY {quantity} {symbol} (sandbox): order {orderid}",
            {
                "symbol": symbol,
                "exchange": "NSE",
                "action": "BUY",
                "quantity": str(quantity),
                "pricetype": "MARKET",
                "product": "MIS",
                "strategy": "demo",
            },
            orderid,
        )
    s.notify("alice", "closes WIPRO: nothing to close", "WIPRO", "No open position to close")
    s.password_changed("bob", "changes his password")
    return s.published


def _reliance_complete() -> _OrderUpdate:
    return _OrderUpdate(
        topic="order.update",
        mode="live",
        api_type="order_update",
        request_data={},
        response_data={},
        api_key="demo-key-alice-1f0c",
        broker="zerodha",
        orderid="250128000012345",
        symbol="RELIANCE",
        exchange="NSE",
        action="BUY",
        quantity=10,
        price=0.0,
        trigger_price=0.0,
        pricetype="MARKET",
        product="MIS",
        order_status="complete",
        filled_quantity=10,
        pending_quantity=0,
        average_price=2450.5,
        rejection_reason=None,
    )


def _nifty_rejected() -> _OrderFailed:
    request = {
        "apikey": "demo-key-bob-77a2",
        "strategy": "momentum",
        "symbol": "NIFTY26JANFUT",
        "exchange": "NFO",
        "action": "BUY",
        "quantity": "1800",
        "pricetype": "MARKET",
        "product": "NRML",
    }
    return _OrderFailed(
        topic="order.failed",
        mode="live",
        api_type="placeorder",
        request_data=request,
        response_data={"status": "error", "message": "Insufficient margin"},
        api_key="demo-key-bob-77a2",
        symbol="NIFTY26JANFUT",
        exchange="NFO",
        action="BUY",
        quantity=1800,
        error_message="Insufficient margin",
    )
