"""Bridge OpenAlgo's in-process event bus to the forwarder: the browser sees what it sees today.

`register(bus)` subscribes `forward` to every bus topic. Each event becomes the Socket.IO event
OpenAlgo's own subscriber emits for it (same name, same payload), or, for the live failures the
browser never sees, a Kafka-only record of the event's fields. The API key never leaves the
process: it is dropped from every payload, at any depth.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any, Final, Protocol

from emitter.publisher import get_event_publisher
from emitter.transport import ThrottledCounter

__all__ = ["TOPICS", "EventBus", "browser_event", "forward", "register", "without_api_keys"]

TOPICS: Final = (
    "order.placed",
    "order.failed",
    "order.no_action",
    "order.modified",
    "order.modify_failed",
    "order.cancelled",
    "order.cancel_failed",
    "orders.all_cancelled",
    "position.closed",
    "basket.completed",
    "split.completed",
    "options.completed",
    "multiorder.completed",
    "analyzer.error",
    "sandbox.order_filled",
    "sandbox.auto_squareoff",
    "sandbox.t1_settlement",
    "order.update",
    "gtt.placed",
    "gtt.failed",
    "gtt.modified",
    "gtt.modify_failed",
    "gtt.cancelled",
    "gtt.cancel_failed",
    "gtt.triggered",
    "gtt.expired",
)
"""Every topic OpenAlgo's event bus publishes on."""

_SECRET_KEYS: Final = frozenset({"apikey", "api_key"})
_BATCH: Final = {"batch_order": True, "is_last_order": True}
_ORDER_UPDATE_FIELDS: Final = (
    "broker",
    "orderid",
    "symbol",
    "exchange",
    "action",
    "quantity",
    "price",
    "trigger_price",
    "pricetype",
    "product",
    "order_status",
    "filled_quantity",
    "pending_quantity",
    "average_price",
    "rejection_reason",
)
_GTT_FIELDS: Final = ("symbol", "exchange", "trigger_id", "triggered_order_id")

Payload = dict[str, Any]
ResolveUser = Callable[[str], str | None]


class EventBus(Protocol):
    """OpenAlgo's `utils.event_bus` as far as the bridge needs it."""

    def subscribe(self, topic: str, callback: Callable[[Any], Any]) -> Any: ...


def _analyzer_update(e: Any) -> Payload:
    return {"request": e.request_data, "response": e.response_data}


def _order_placed(e: Any) -> Payload:
    return {
        "symbol": e.symbol,
        "action": e.action,
        "orderid": e.orderid,
        "exchange": e.exchange,
        "price_type": e.pricetype,
        "product_type": e.product,
        "mode": "live",
    }


def _no_action(e: Any) -> Payload:
    return {"symbol": e.symbol, "status": "info", "message": e.message}


def _modified(e: Any) -> Payload:
    return {"status": "success", "orderid": e.orderid, "mode": "live"}


def _cancelled(e: Any) -> Payload:
    return {"status": e.status, "orderid": e.orderid, "mode": "live"}


def _all_cancelled(e: Any) -> Payload:
    return {
        "status": "success",
        "orderid": f"{e.canceled_count} orders canceled",
        "mode": "live",
        **_BATCH,
        "canceled_count": e.canceled_count,
        "failed_count": e.failed_count,
    }


def _position_closed(e: Any) -> Payload:
    message = e.message or "All Open Positions Squared Off"
    return {"status": "success", "message": message, "mode": "live"}


def _basket(e: Any) -> Payload:
    return {
        "symbol": e.strategy or "Basket",
        "action": f"{e.successful}/{e.total} orders",
        "orderid": f"basket_{e.successful}",
        "exchange": "MULTI",
        "price_type": "BASKET",
        "product_type": "BASKET",
        "mode": "live",
        **_BATCH,
    }


def _split(e: Any) -> Payload:
    return {
        "symbol": e.symbol or "Split",
        "action": e.action or "SPLIT",
        "orderid": f"{e.successful}/{e.total} orders",
        "exchange": e.exchange or "Unknown",
        "price_type": e.pricetype or "MARKET",
        "product_type": e.product or "MIS",
        "mode": "live",
        **_BATCH,
    }


def _options(e: Any) -> Payload:
    return {
        "symbol": e.symbol,
        "action": e.action,
        "orderid": f"{e.successful}/{e.total} orders",
        "exchange": e.exchange,
        "price_type": e.pricetype or "MARKET",
        "product_type": e.product or "MIS",
        "mode": "live",
        **_BATCH,
    }


def _multiorder(e: Any) -> Payload:
    return {
        "symbol": e.underlying,
        "action": e.strategy or "Multi-Order",
        "orderid": f"{e.successful_legs}/{e.total} legs",
        "exchange": e.exchange,
        "price_type": "MULTI",
        "product_type": "OPTIONS",
        "mode": "live",
        **_BATCH,
        "multiorder_summary": True,
        "successful_legs": e.successful_legs,
        "failed_legs": e.failed_legs,
    }


def _gtt(e: Any) -> Payload:
    """GTT events differ in which fields they carry; a missing one is "" as in OpenAlgo's events."""
    fields = {name: getattr(e, name, "") for name in _GTT_FIELDS}
    return {"event": e.topic.removeprefix("gtt."), **fields, "mode": "live"}


def _order_update(e: Any) -> Payload:
    return {**{name: getattr(e, name) for name in _ORDER_UPDATE_FIELDS}, "mode": e.mode}


_ANY_MODE: Final[Mapping[str, tuple[str, Callable[[Any], Payload]]]] = {
    "order.update": ("order_update", _order_update),
}
"""Topics whose browser event does not depend on the mode."""

_LIVE: Final[Mapping[str, tuple[str, Callable[[Any], Payload]]]] = {
    "order.placed": ("order_event", _order_placed),
    "order.no_action": ("order_notification", _no_action),
    "order.modified": ("modify_order_event", _modified),
    "order.cancelled": ("cancel_order_event", _cancelled),
    "orders.all_cancelled": ("cancel_order_event", _all_cancelled),
    "position.closed": ("close_position_event", _position_closed),
    "basket.completed": ("order_event", _basket),
    "split.completed": ("order_event", _split),
    "options.completed": ("order_event", _options),
    "multiorder.completed": ("order_event", _multiorder),
    **{topic: ("gtt_event", _gtt) for topic in TOPICS if topic.startswith("gtt.")},
}
"""Live-mode topics the browser hears about; the live failures are absent on purpose."""


def browser_event(event: Any) -> tuple[str, Payload] | None:
    """The Socket.IO event and payload OpenAlgo emits for this bus event, or None for none."""
    topic = event.topic
    shape = _ANY_MODE.get(topic)
    if shape is None:
        if event.mode == "analyze" or topic.startswith("sandbox."):
            return "analyzer_update", _analyzer_update(event)
        shape = _LIVE.get(topic)
        if shape is None:
            return None
    name, build = shape
    return name, build(event)


def without_api_keys(value: Any) -> Any:
    """A copy without any `apikey`/`api_key` entry at any depth: that key can trade the account."""
    if isinstance(value, Mapping):
        return {
            k: without_api_keys(v)
            for k, v in value.items()
            if not (isinstance(k, str) and k.lower() in _SECRET_KEYS)
        }
    if isinstance(value, list | tuple):
        return [without_api_keys(v) for v in value]
    return value


def _fields(event: Any) -> Payload:
    if dataclasses.is_dataclass(event) and not isinstance(event, type):
        return {f.name: getattr(event, f.name) for f in dataclasses.fields(event)}
    return dict(vars(event))


def _user_of(event: Any, resolve_user: ResolveUser | None) -> str | None:
    if resolve_user is not None:
        try:
            user = resolve_user(getattr(event, "api_key", ""))
        except Exception as exc:  # a failing lookup must not lose the event
            _failures.add(f"resolve_user raised {type(exc).__name__}")
        else:
            if user:
                return user
    for name in ("user_id", "username"):
        value = getattr(event, name, None)
        if value:
            return str(value)
    return None


_failures: Final = ThrottledCounter("OpenAlgo bus events not forwarded")


def forward(event: Any, *, resolve_user: ResolveUser | None = None) -> bool:
    """Publish one bus event (runs in the bus worker thread); True when queued, never raising."""
    try:
        topic = event.topic
        user_id = _user_of(event, resolve_user)
        shaped = browser_event(event)
        if shaped is None:
            name, data, browser = topic, _fields(event), False
        else:
            (name, data), browser = shaped, True
        return get_event_publisher().emit(
            name, without_api_keys(data), user_id=user_id, topic=topic, browser=browser
        )
    except Exception as exc:  # the bus must keep serving its other subscribers
        _failures.add(f"{type(exc).__name__} on {type(event).__name__}")
        return False


def register(bus: EventBus, *, resolve_user: ResolveUser | None = None) -> Callable[[Any], bool]:
    """Subscribe the bridge to every topic; `resolve_user(api_key)` names the event's user."""
    callback = functools.partial(forward, resolve_user=resolve_user)
    for topic in TOPICS:
        bus.subscribe(topic, callback)
    return callback
