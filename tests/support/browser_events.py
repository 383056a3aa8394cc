"""One sample of every Socket.IO event the browser listens for, as the forwarder holds them."""

from __future__ import annotations

from typing import Any, Final

from emitter.contract import Envelope
from harness.events import as_received, envelope

TS: Final = 1_769_682_645_000_000_000

BROWSER_EVENTS: list[tuple[str, dict[str, Any], str | None]] = [
    (
        "order_event",
        {
            "symbol": "RELIANCE",
            "action": "BUY",
            "orderid": "250128000012345",
            "exchange": "NSE",
            "price_type": "MARKET",
            "product_type": "MIS",
            "mode": "live",
        },
        "alice",
    ),
    (
        "order_event",
        {
            "symbol": "NIFTY",
            "action": "SELL",
            "orderid": "2/3 legs",
            "mode": "live",
            "batch_order": True,
            "is_last_order": True,
            "multiorder_summary": True,
            "successful_legs": 2,
            "failed_legs": 1,
        },
        "alice",
    ),
    (
        "analyzer_update",
        {
            "request": {"symbol": "SBIN", "quantity": "1", "legs": [{"strike": 22500.5}, {}]},
            "response": {"status": "success", "orderid": "A1", "mode": "analyze", "data": None},
        },
        "alice",
    ),
    ("order_notification", {"symbol": "INFY", "status": "info", "message": "No action"}, "bob"),
    (
        "modify_order_event",
        {"status": "success", "orderid": "A2", "mode": "live"},
        "bob",
    ),
    (
        "cancel_order_event",
        {"status": "success", "orderid": "A3", "mode": "live"},
        "bob",
    ),
    (
        "cancel_order_event",
        {
            "status": "success",
            "orderid": "3 orders canceled",
            "mode": "live",
            "batch_order": True,
            "is_last_order": True,
            "canceled_count": 3,
            "failed_count": 0,
        },
        "alice",
    ),
    (
        "close_position_event",
        {"status": "success", "message": "All Open Positions Squared Off", "mode": "live"},
        "alice",
    ),
    (
        "order_update",
        {
            "broker": "zerodha",
            "orderid": "250128000012345",
            "symbol": "RELIANCE",
            "exchange": "NSE",
            "action": "BUY",
            "quantity": 10,
            "price": 2450.55,
            "trigger_price": 0.0,
            "pricetype": "LIMIT",
            "product": "MIS",
            "order_status": "complete",
            "filled_quantity": 10,
            "pending_quantity": 0,
            "average_price": 2450.5,
            "rejection_reason": None,
            "mode": "live",
        },
        "alice",
    ),
    (
        "gtt_event",
        {
            "event": "triggered",
            "symbol": "TCS",
            "exchange": "NSE",
            "trigger_id": "G-17",
            "triggered_order_id": "250128000099999",
            "mode": "live",
        },
        "alice",
    ),
    (
        "master_contract_download",
        {
            "broker": "zerodha",
            "status": "success",
            "message": "Master contract downloaded ✓",
            "symbols_count": 98765,
            "download_time_seconds": 12.25,
        },
        None,
    ),
    (
        "password_change",
        {
            "user": "alice",
            "status": "success",
            "message": "Password changed",
            "ip_address": "127.0.0.1",
            "user_agent": "Mozilla/5.0",
        },
        "alice",
    ),
]
"""One sample of every event of REFERENCE section 2, with each payload variant's extras."""


def relayed(n: int, event: str, data: dict[str, Any], user_id: str | None = "alice") -> Envelope:
    """Event `n` as the forwarder holds it: decoded from the emitter's msgpack frame."""
    return as_received(envelope(event, data, id=f"event-{n}", ts=TS + n, user_id=user_id))


def browser_batch(start: int = 0) -> list[Envelope]:
    return [relayed(start + n, e, p, u) for n, (e, p, u) in enumerate(BROWSER_EVENTS)]
