"""Each OpenAlgo bus event reaches the forwarder as the browser sees it now, minus the API key."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from emitter import EventPublisherFactory, decode_envelope
from emitter.openalgo import TOPICS, browser_event, forward, register, without_api_keys
from tests.emitter.conftest import Peer

SECRET = "c0ffee-secret-api-key-3b9d"
REQUEST = {
    "apikey": SECRET,
    "strategy": "s1",
    "symbol": "SBIN",
    "orders": [{"symbol": "INFY", "api_key": SECRET}, {"symbol": "TCS", "APIKEY": SECRET}],
}
REQUEST_SEEN = {
    "strategy": "s1",
    "symbol": "SBIN",
    "orders": [{"symbol": "INFY"}, {"symbol": "TCS"}],
}
RESPONSE = {"status": "success", "orderid": "2501"}


@dataclasses.dataclass
class OrderEvent:
    """The common part of OpenAlgo's order events (events/base.py)."""

    topic: str = ""
    mode: str = "live"
    api_type: str = "placeorder"
    request_data: dict[str, Any] = dataclasses.field(default_factory=lambda: dict(REQUEST))
    response_data: dict[str, Any] = dataclasses.field(default_factory=lambda: dict(RESPONSE))
    api_key: str = SECRET


FIELDS: dict[str, dict[str, Any]] = {
    "order.placed": {
        "strategy": "s1",
        "symbol": "SBIN",
        "exchange": "NSE",
        "action": "BUY",
        "quantity": 10,
        "pricetype": "MARKET",
        "product": "MIS",
        "orderid": "2501",
    },
    "order.failed": {"symbol": "SBIN", "exchange": "NSE", "error_message": "rejected"},
    "order.no_action": {"symbol": "SBIN", "exchange": "NSE", "message": "Positions matched"},
    "order.modified": {"symbol": "SBIN", "exchange": "NSE", "orderid": "2501"},
    "order.modify_failed": {"symbol": "SBIN", "orderid": "2501", "error_message": "too late"},
    "order.cancelled": {"orderid": "2501", "status": "success"},
    "order.cancel_failed": {"orderid": "2501", "error_message": "unknown order"},
    "orders.all_cancelled": {
        "canceled_count": 3,
        "failed_count": 1,
        "canceled_orders": ["1", "2", "3"],
        "failed_cancellations": [{"orderid": "4"}],
    },
    "position.closed": {
        "symbol": "",
        "exchange": "",
        "product": "",
        "orderid": "",
        "message": "",
    },
    "basket.completed": {
        "strategy": "",
        "results": [{"orderid": "1"}],
        "successful": 2,
        "total": 3,
    },
    "split.completed": {
        "strategy": "s1",
        "symbol": "SBIN",
        "exchange": "NSE",
        "action": "SELL",
        "pricetype": "",
        "product": "CNC",
        "total_quantity": 100,
        "split_size": 25,
        "results": [],
        "successful": 4,
        "total": 4,
    },
    "options.completed": {
        "strategy": "s1",
        "symbol": "NIFTY25JAN24000CE",
        "exchange": "NFO",
        "action": "BUY",
        "pricetype": "LIMIT",
        "product": "",
        "results": [],
        "successful": 1,
        "total": 2,
    },
    "multiorder.completed": {
        "strategy": "",
        "underlying": "NIFTY",
        "exchange": "NFO",
        "results": [],
        "successful_legs": 3,
        "failed_legs": 1,
        "total": 4,
    },
    "analyzer.error": {"error_message": "invalid symbol"},
    "sandbox.order_filled": {
        "orderid": "7",
        "tradeid": "t7",
        "symbol": "SBIN",
        "exchange": "NSE",
        "action": "BUY",
        "quantity": 1,
        "price": 801.5,
        "product": "MIS",
        "strategy": "",
    },
    "sandbox.auto_squareoff": {"cancelled_orders": 2, "closed_positions": 1},
    "sandbox.t1_settlement": {"settled_users": 1, "settled_positions": 5},
    "order.update": {
        "broker": "zerodha",
        "orderid": "2501",
        "symbol": "SBIN",
        "exchange": "NSE",
        "action": "BUY",
        "quantity": 10,
        "price": 800.0,
        "trigger_price": 0.0,
        "pricetype": "LIMIT",
        "product": "MIS",
        "order_status": "complete",
        "filled_quantity": 10,
        "pending_quantity": 0,
        "average_price": 799.95,
        "rejection_reason": "",
    },
    "gtt.placed": {
        "strategy": "s1",
        "symbol": "SBIN",
        "exchange": "NSE",
        "trigger_type": "single",
        "trigger_id": "g1",
        "trigger_prices": [790.0],
    },
    "gtt.failed": {
        "symbol": "SBIN",
        "exchange": "NSE",
        "trigger_type": "single",
        "error_message": "no",
    },
    "gtt.modified": {"symbol": "SBIN", "exchange": "NSE", "trigger_id": "g1"},
    "gtt.modify_failed": {"symbol": "SBIN", "trigger_id": "g1", "error_message": "no"},
    "gtt.cancelled": {"trigger_id": "g1", "status": "success"},
    "gtt.cancel_failed": {"trigger_id": "g1", "error_message": "no"},
    "gtt.triggered": {
        "symbol": "SBIN",
        "exchange": "NSE",
        "trigger_id": "g1",
        "triggered_order_id": "2502",
    },
    "gtt.expired": {"symbol": "SBIN", "exchange": "NSE", "trigger_id": "g1"},
}

BATCH = {"batch_order": True, "is_last_order": True}

LIVE_BROWSER: dict[str, tuple[str, dict[str, Any]] | None] = {
    "order.placed": (
        "order_event",
        {
            "symbol": "SBIN",
            "action": "BUY",
            "orderid": "2501",
            "exchange": "NSE",
            "price_type": "MARKET",
            "product_type": "MIS",
            "mode": "live",
        },
    ),
    "order.failed": None,
    "order.no_action": (
        "order_notification",
        {"symbol": "SBIN", "status": "info", "message": "Positions matched"},
    ),
    "order.modified": (
        "modify_order_event",
        {"status": "success", "orderid": "2501", "mode": "live"},
    ),
    "order.modify_failed": None,
    "order.cancelled": (
        "cancel_order_event",
        {"status": "success", "orderid": "2501", "mode": "live"},
    ),
    "order.cancel_failed": None,
    "orders.all_cancelled": (
        "cancel_order_event",
        {
            "status": "success",
            "orderid": "3 orders canceled",
            "mode": "live",
            **BATCH,
            "canceled_count": 3,
            "failed_count": 1,
        },
    ),
    "position.closed": (
        "close_position_event",
        {"status": "success", "message": "All Open Positions Squared Off", "mode": "live"},
    ),
    "basket.completed": (
        "order_event",
        {
            "symbol": "Basket",
            "action": "2/3 orders",
            "orderid": "basket_2",
            "exchange": "MULTI",
            "price_type": "BASKET",
            "product_type": "BASKET",
            "mode": "live",
            **BATCH,
        },
    ),
    "split.completed": (
        "order_event",
        {
            "symbol": "SBIN",
            "action": "SELL",
            "orderid": "4/4 orders",
            "exchange": "NSE",
            "price_type": "MARKET",
            "product_type": "CNC",
            "mode": "live",
            **BATCH,
        },
    ),
    "options.completed": (
        "order_event",
        {
            "symbol": "NIFTY25JAN24000CE",
            "action": "BUY",
            "orderid": "1/2 orders",
            "exchange": "NFO",
            "price_type": "LIMIT",
            "product_type": "MIS",
            "mode": "live",
            **BATCH,
        },
    ),
    "multiorder.completed": (
        "order_event",
        {
            "symbol": "NIFTY",
            "action": "Multi-Order",
            "orderid": "3/4 legs",
            "exchange": "NFO",
            "price_type": "MULTI",
            "product_type": "OPTIONS",
            "mode": "live",
            **BATCH,
            "multiorder_summary": True,
            "successful_legs": 3,
            "failed_legs": 1,
        },
    ),
    "analyzer.error": None,
    "sandbox.order_filled": ("analyzer_update", {"request": REQUEST_SEEN, "response": RESPONSE}),
    "sandbox.auto_squareoff": ("analyzer_update", {"request": REQUEST_SEEN, "response": RESPONSE}),
    "sandbox.t1_settlement": ("analyzer_update", {"request": REQUEST_SEEN, "response": RESPONSE}),
    "order.update": ("order_update", {**FIELDS["order.update"], "mode": "live"}),
    **{
        topic: (
            "gtt_event",
            {
                "event": topic.removeprefix("gtt."),
                "symbol": FIELDS[topic].get("symbol", ""),
                "exchange": FIELDS[topic].get("exchange", ""),
                "trigger_id": FIELDS[topic].get("trigger_id", ""),
                "triggered_order_id": FIELDS[topic].get("triggered_order_id", ""),
                "mode": "live",
            },
        )
        for topic in TOPICS
        if topic.startswith("gtt.")
    },
}


def event_class(topic: str) -> type:
    """A dataclass shaped like OpenAlgo's event for `topic`, with sample values as defaults."""
    fields = [
        (name, type(value), dataclasses.field(default_factory=lambda v=value: v))
        for name, value in FIELDS[topic].items()
    ]
    name = "".join(part.capitalize() for part in topic.replace(".", "_").split("_")) + "Event"
    return dataclasses.make_dataclass(name, fields, bases=(OrderEvent,))


def make_event(topic: str, mode: str | None = "live", **extra: Any) -> Any:
    """An event as OpenAlgo publishes it; `extra` sets attributes some versions add (user_id)."""
    event = event_class(topic)(topic=topic, mode=mode)
    for name, value in extra.items():
        setattr(event, name, value)
    return event


def expected_browser(topic: str, mode: str) -> tuple[str, dict[str, Any]] | None:
    if topic == "order.update":
        return "order_update", {**FIELDS[topic], "mode": mode}
    if mode == "analyze":
        return "analyzer_update", {"request": REQUEST_SEEN, "response": RESPONSE}
    return LIVE_BROWSER[topic]


def kafka_only_data(topic: str, mode: str) -> dict[str, Any]:
    """The event's own fields as Kafka records them: every field but the API key."""
    return {
        "topic": topic,
        "mode": mode,
        "api_type": "placeorder",
        "request_data": REQUEST_SEEN,
        "response_data": RESPONSE,
        **FIELDS[topic],
    }


class Bus:
    """OpenAlgo's event bus reduced to what the bridge uses: subscribe, then publish to them."""

    def __init__(self) -> None:
        self.subscribers: dict[str, list[Callable[[Any], Any]]] = {}

    def subscribe(self, topic: str, callback: Callable[[Any], Any]) -> None:
        self.subscribers.setdefault(topic, []).append(callback)

    def publish(self, event: Any) -> None:
        for callback in self.subscribers.get(event.topic, []):
            callback(event)


@pytest.fixture
def bus(publisher_env: str) -> Bus:
    bus = Bus()
    register(bus)
    return bus


CASES = [(topic, mode) for topic in TOPICS for mode in ("live", "analyze")]


class TestForward:
    @pytest.mark.parametrize(("topic", "mode"), CASES, ids=[f"{t}-{m}" for t, m in CASES])
    def test_each_bus_event_reaches_the_forwarder_as_the_browser_sees_it(
        self, bus: Bus, peer: Peer, topic: str, mode: str
    ):
        """The browser's event name and payload exactly; Kafka-only records for live failures."""
        bus.publish(make_event(topic, mode))
        (frame,) = peer.frames(1)
        envelope = decode_envelope(frame)
        assert SECRET.encode() not in frame
        assert envelope.topic == topic
        expected = expected_browser(topic, mode)
        if expected is None:
            assert (envelope.event, envelope.browser) == (topic, False)
            assert envelope.data == kafka_only_data(topic, mode)
        else:
            assert (envelope.event, envelope.browser) == (expected[0], True)
            assert envelope.data == expected[1]
            assert list(envelope.data) == list(expected[1])

    def test_registration_covers_every_topic_once(self, bus: Bus):
        """Each of OpenAlgo's topics has exactly one bridge subscription."""
        assert sorted(bus.subscribers) == sorted(TOPICS)
        assert all(len(callbacks) == 1 for callbacks in bus.subscribers.values())

    def test_the_user_comes_from_resolve_user(self, publisher_env: str, peer: Peer):
        """resolve_user(api_key) names the user, who then keys the Kafka record."""
        bus = Bus()
        register(bus, resolve_user=lambda key: "trader1" if key == SECRET else None)
        bus.publish(make_event("order.placed"))
        (envelope,) = peer.envelopes(1)
        assert (envelope.user_id, envelope.key) == ("trader1", "trader1")

    def test_without_resolve_user_the_events_own_user_is_used(self, bus: Bus, peer: Peer):
        """An event carrying a username is keyed by it; one without any is keyed admin."""
        bus.publish(make_event("order.placed", username="trader2"))
        bus.publish(make_event("order.placed"))
        first, second = peer.envelopes(2)
        assert (first.user_id, first.key) == ("trader2", "trader2")
        assert (second.user_id, second.key) == (None, "admin")

    def test_a_failing_resolve_user_still_forwards_the_event(self, publisher_env: str, peer: Peer):
        """A user lookup that raises loses the user, not the event."""

        def broken(_: str) -> str:
            raise LookupError("database down")

        assert forward(make_event("order.cancelled", user_id="u9"), resolve_user=broken)
        (envelope,) = peer.envelopes(1)
        assert (envelope.event, envelope.user_id) == ("cancel_order_event", "u9")

    @pytest.mark.parametrize(
        "event", [object(), None, "order.placed", make_event("order.placed", mode=None)]
    )
    def test_forward_never_raises(self, publisher_env: str, event: Any):
        """Whatever the bus hands over, the bridge returns instead of raising into the bus."""
        assert forward(event) in (True, False)

    def test_an_unknown_topic_is_recorded_for_kafka_only(self, publisher_env: str, peer: Peer):
        """A topic newer than this bridge still reaches Kafka, and not the browser."""
        event = make_event("order.failed")
        event.topic = "order.something_new"
        assert forward(event)
        (envelope,) = peer.envelopes(1)
        assert (envelope.event, envelope.browser) == ("order.something_new", False)

    def test_the_shared_publisher_is_used(self, bus: Bus, peer: Peer):
        """Bridge events are counted by the process's one publisher."""
        bus.publish(make_event("order.placed"))
        peer.frames(1)
        assert EventPublisherFactory.get_publisher().stats().queued == 1


class TestBrowserEvent:
    def test_a_position_close_message_is_kept_when_given(self):
        """The default message is used only when the event carries none."""
        event = make_event("position.closed", message="Closed 3 positions")
        assert browser_event(event) == (
            "close_position_event",
            {"status": "success", "message": "Closed 3 positions", "mode": "live"},
        )

    def test_a_named_basket_uses_its_strategy(self):
        """A basket's strategy name is the toast's symbol."""
        _, payload = browser_event(make_event("basket.completed", strategy="Momentum")) or ("", {})
        assert payload["symbol"] == "Momentum"


class TestWithoutApiKeys:
    def test_keys_are_removed_at_any_depth_in_any_case(self):
        """apikey and api_key go, whatever their case or nesting; everything else stays."""
        value = {"apikey": 1, "a": [{"API_KEY": 2, "b": ({"ApiKey": 3, "c": 4},)}], "d": 5}
        assert without_api_keys(value) == {"a": [{"b": [{"c": 4}]}], "d": 5}

    def test_the_original_is_left_untouched(self):
        """OpenAlgo's other subscribers still see the event as it was published."""
        value = {"apikey": "k", "nested": {"api_key": "k"}}
        without_api_keys(value)
        assert value == {"apikey": "k", "nested": {"api_key": "k"}}
