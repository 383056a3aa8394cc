"""The Kafka record of one event, the same whichever client library sends it."""

from __future__ import annotations

import functools
import time
from typing import Any, Final

import msgspec

from emitter.contract import SYSTEM_KEY, Envelope

__all__ = ["UNENCODABLE", "emit_time", "kafka_headers", "kafka_value"]

SOURCE: Final = "openalgo"
VERSION: Final = "1.0"
UNENCODABLE: Final = (msgspec.EncodeError, TypeError)
"""What `kafka_value` raises for data JSON cannot hold: the event can never be sent."""


class _Record(msgspec.Struct):
    """The value downstream consumers parse: the seed's fields in its order, then the event id."""

    event_type: str
    timestamp: str
    user_id: str
    source: str
    version: str
    data: dict[str, Any]
    event_id: str


_json_encoder: Final = msgspec.json.Encoder()


def kafka_value(envelope: Envelope) -> bytes:
    """The seed's JSON value; raises TypeError for data JSON cannot hold (such as tuple keys)."""
    return _json_encoder.encode(
        _Record(
            event_type=envelope.event,
            timestamp=emit_time(envelope.ts),
            user_id=envelope.user_id or SYSTEM_KEY,
            source=SOURCE,
            version=VERSION,
            data=envelope.data,
            event_id=envelope.id,
        )
    )


def emit_time(ns: int) -> str:
    """ISO-8601 UTC with microseconds and Z, as the seed wrote it; hot, so the second is cached."""
    seconds, rest = divmod(ns, 1_000_000_000)
    return f"{_second(seconds)}.{rest // 1000:06d}Z"


@functools.lru_cache(maxsize=64)
def _second(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def kafka_headers(envelope: Envelope) -> list[tuple[str, bytes]]:
    """Event type and id as headers, so consumers route and deduplicate without parsing values."""
    return [("event_type", envelope.event.encode()), ("event_id", envelope.id.encode())]
