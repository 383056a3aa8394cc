"""Bridge OpenAlgo's in-process event bus to the forwarder: the browser sees what it sees today,
Kafka the whole event.

`register(bus)` subscribes `forward` to every bus topic. Each event becomes the Socket.IO event
OpenAlgo's own subscriber emits for it (same name, same payload) carrying the event's other
fields for Kafka, or, for the live failures the browser never sees, a Kafka-only record of the
event's fields. No API key leaves the process: every entry whose name is an API key's (see
`is_secret_name`) is dropped, at any depth.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
import os
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any, Final, Protocol, runtime_checkable

import msgspec

from emitter.config import ConfigError, order_event_modes
from emitter.publisher import EventPublisher, get_event_publisher
from emitter.transport import ThrottledCounter

__all__ = [
    "TOPICS",
    "EventBus",
    "browser_event",
    "browser_via_forwarder",
    "forward",
    "is_secret_name",
    "register",
    "without_api_keys",
]

logger = logging.getLogger("emitter")

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

_API_KEY_MARK: Final = "apikey"
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


@runtime_checkable
class _Unsubscribing(Protocol):
    """What `register(..., replacing=)` needs besides: OpenAlgo's bus has it."""

    def unsubscribe(self, topic: str, callback: Callable[[Any], Any]) -> Any: ...


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


def is_secret_name(name: object) -> bool:
    """Whether an entry so named holds an API key: its name, lowercased and with every character
    that is not a letter or a digit removed, contains `apikey` (apikey, API-KEY, X-Api-Key,
    broker_api_key, apikeys...)."""
    return isinstance(name, str) and _API_KEY_MARK in _normalised(name)


@functools.lru_cache(maxsize=4096)
def _normalised(name: str) -> str:
    return "".join(char for char in name.casefold() if char.isalnum())


def without_api_keys(value: Any) -> Any:
    """A JSON-ready copy without any API-key entry at any depth: that key can trade the account.

    The value is first converted to builtins (dataclasses and structs become dicts, sets lists,
    datetimes ISO-8601 text; tuples then become lists), so no container type can hide a key.
    Raises TypeError for a value msgspec cannot convert, as encoding it would.
    """
    return _stripped(msgspec.to_builtins(value))


def _stripped(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _stripped(v) for k, v in value.items() if not is_secret_name(k)}
    if isinstance(value, list | tuple):
        return [_stripped(v) for v in value]
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


def forward(
    event: Any,
    *,
    resolve_user: ResolveUser | None = None,
    browser_via_forwarder: bool = True,
    publisher: EventPublisher | None = None,
) -> bool:
    """Publish one bus event (runs in the bus worker thread); True when queued, never raising.

    The browser payload goes out as `data`, every other field of the event as `extra` (Kafka
    only). With `browser_via_forwarder` false the app's own subscriber shows the browser the
    event, so the forwarder is told not to relay it.
    """
    try:
        topic = event.topic
        user_id = _user_of(event, resolve_user)
        fields = without_api_keys(_fields(event))
        shaped = browser_event(event)
        if shaped is None:
            name, data, extra, browser = topic, fields, None, False
        else:
            name, data = shaped[0], without_api_keys(shaped[1])
            extra = {k: v for k, v in fields.items() if k not in data}
            browser = browser_via_forwarder
        return (get_event_publisher() if publisher is None else publisher).emit(
            name, data, user_id=user_id, topic=topic, browser=browser, extra=extra
        )
    except Exception as exc:  # the bus must keep serving its other subscribers
        _failures.add(f"{type(exc).__name__} on {type(event).__name__}")
        return False


def browser_via_forwarder(env: Mapping[str, str] | None = None) -> bool:
    """Whether the forwarder delivers to browsers: ORDER_EVENT_MODE (default SOCKETIO) includes
    SOCKETIO. An invalid value is logged and read as no: the app then shows browsers everything
    itself, which loses nothing and shows nothing twice whatever the forwarder does."""
    try:
        return "SOCKETIO" in order_event_modes(os.environ if env is None else env)
    except ConfigError as exc:
        logger.error("%s; the app emits to browsers itself", exc)
        return False


def register(
    bus: EventBus,
    *,
    resolve_user: ResolveUser | None = None,
    replacing: ModuleType | None = None,
    env: Mapping[str, str] | None = None,
    publisher: EventPublisher | None = None,
) -> Callable[[Any], bool]:
    """Subscribe the bridge to every topic; `resolve_user(api_key)` names the event's user.

    Events go to `publisher`, by default the process-wide one (`get_event_publisher()`), asked
    for on each event so a fork or a reset is followed.

    `replacing` is the app's own Socket.IO subscriber module: when the forwarder delivers to
    browsers (`browser_via_forwarder(env)`), its functions are unsubscribed from every topic, so
    browsers get each event once, through the forwarder; otherwise it keeps showing them.
    """
    via_forwarder = browser_via_forwarder(env)
    if replacing is not None and via_forwarder:
        if not isinstance(bus, _Unsubscribing):
            raise TypeError("register(..., replacing=) needs a bus with unsubscribe()")
        for handler in _functions_of(replacing):
            for topic in TOPICS:
                bus.unsubscribe(topic, handler)
    callback = functools.partial(
        forward, resolve_user=resolve_user, browser_via_forwarder=via_forwarder, publisher=publisher
    )
    for topic in TOPICS:
        bus.subscribe(topic, callback)
    return callback


def _functions_of(module: ModuleType) -> list[Callable[..., Any]]:
    return [
        value
        for value in vars(module).values()
        if inspect.isfunction(value) and value.__module__ == module.__name__
    ]
