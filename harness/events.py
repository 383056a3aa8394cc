"""Events to feed the forwarder: one envelope factory, and (from forwarder.push) the blocking PUSH
socket `dead-letters replay` uses."""

from __future__ import annotations

import itertools
import time
from typing import Any, Final

from emitter.contract import SCHEMA_VERSION, SYSTEM_KEY, Envelope, decode_envelope, encode_envelope
from forwarder.push import push_frames, pusher

__all__ = ["as_received", "envelope", "numbered", "push_frames", "pusher"]

_ids: Final = itertools.count()


def envelope(
    name: str = "order_event", payload: dict[str, Any] | None = None, **fields: Any
) -> Envelope:
    """A valid envelope of event `name`: user1's, with a fresh id and the time now, unless
    `fields` (any of Envelope's) say otherwise; the key follows the user, `admin` for none."""
    user_id = fields.pop("user_id", "user1")
    values: dict[str, Any] = {
        "v": SCHEMA_VERSION,
        "id": f"event-{next(_ids):06d}",
        "ts": time.time_ns(),
        "event": name,
        "topic": None,
        "user_id": user_id,
        "key": user_id or SYSTEM_KEY,
        "data": {} if payload is None else payload,
    }
    return Envelope(**(values | fields))


def numbered(n: int, *, user: str | None = "user1", prefix: str = "ev", **fields: Any) -> Envelope:
    """An order placed on the bus whose id (`ev-000042`) and order id (`ORD42`) tell which it is."""
    payload = {"symbol": "SBIN-EQ", "action": "BUY", "orderid": f"ORD{n}", "mode": "live"}
    return envelope(
        "order_event",
        payload,
        **({"id": f"{prefix}-{n:06d}", "topic": "order.placed", "user_id": user} | fields),
    )


def as_received(sent: Envelope) -> Envelope:
    """The envelope as the forwarder holds it: decoded from the emitter's msgpack frame."""
    return decode_envelope(encode_envelope(sent))
