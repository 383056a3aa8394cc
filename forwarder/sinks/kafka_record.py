"""The Kafka record of one event, the same whichever client library sends it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Final

import msgspec

from emitter.contract import SYSTEM_KEY, Envelope
from forwarder.deadletter import utc_timestamp

__all__ = ["UNENCODABLE", "kafka_headers", "kafka_value"]

SOURCE: Final = "openalgo"
VERSION: Final = "1.0"
UNENCODABLE: Final = (msgspec.EncodeError, TypeError)
"""What `kafka_value` raises for data JSON cannot hold: the event can never be sent."""

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


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
            timestamp=utc_timestamp(_EPOCH + timedelta(microseconds=envelope.ts // 1000)),
            user_id=envelope.user_id or SYSTEM_KEY,
            source=SOURCE,
            version=VERSION,
            data=envelope.data,
            event_id=envelope.id,
        )
    )


def kafka_headers(envelope: Envelope) -> list[tuple[str, bytes]]:
    """Event type and id as headers, so consumers route and deduplicate without parsing values."""
    return [("event_type", envelope.event.encode()), ("event_id", envelope.id.encode())]
