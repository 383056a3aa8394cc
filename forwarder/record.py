"""Builds a Kafka record's value, key and headers, once, for both clients."""

from __future__ import annotations

import functools
from typing import Any, Final

import msgspec

from emitter.contract import SYSTEM_KEY, Envelope, utc_timestamp

__all__ = [
    "UNENCODABLE",
    "KafkaRecord",
    "kafka_headers",
    "kafka_record",
    "kafka_value",
]

SOURCE: Final = "openalgo"
VERSION: Final = "1.0"
UNENCODABLE: Final = (msgspec.EncodeError, TypeError)
"""What `kafka_value` raises for data JSON cannot hold: the event can never be sent."""


class _Record(msgspec.Struct):
    """The value downstream consumers parse: the seed's fields in its order, then ours."""

    event_type: str
    timestamp: str
    user_id: str
    source: str
    version: str
    data: dict[str, Any]
    event_id: str
    topic: str | None
    """The OpenAlgo event-bus topic, null for events that did not come from the bus."""


_json_encoder: Final = msgspec.json.Encoder()

KafkaRecord = tuple[bytes, bytes, list[tuple[str, bytes]]]
"""Value, key and headers, as both clients' produce calls take them."""


def kafka_record(envelope: Envelope) -> KafkaRecord:
    """The whole record; raises what `kafka_value` raises for data JSON cannot hold."""
    return kafka_value(envelope), envelope.key.encode(), kafka_headers(envelope)


def kafka_value(envelope: Envelope) -> bytes:
    """The seed's JSON value; raises TypeError for data JSON cannot hold (such as tuple keys).

    `data` is the browser payload followed by the event's other fields; where a name is in both,
    the browser's value is kept, so a consumer reads what the browser showed.
    """
    return _json_encoder.encode(
        _Record(
            event_type=envelope.event,
            timestamp=utc_timestamp(envelope.ts),
            user_id=envelope.user_id or SYSTEM_KEY,
            source=SOURCE,
            version=VERSION,
            data=_whole(envelope),
            event_id=envelope.id,
            topic=envelope.topic,
        )
    )


def _whole(envelope: Envelope) -> dict[str, Any]:
    data, extra = envelope.data, envelope.extra
    if not extra:
        return data
    whole = dict(data)
    for name, value in extra.items():
        whole.setdefault(name, value)
    return whole


def kafka_headers(envelope: Envelope) -> list[tuple[str, bytes]]:
    """Event type, id and, for events from the bus, its topic as headers, so consumers route
    and deduplicate without parsing values. No topic is no header rather than a null value:
    records with a null header value did not come back through the embedded test broker."""
    if envelope.topic is None:
        return [_header("event_type", envelope.event), ("event_id", envelope.id.encode())]
    return [
        _header("event_type", envelope.event),
        ("event_id", envelope.id.encode()),
        _header("topic", envelope.topic),
    ]


@functools.lru_cache(maxsize=256)
def _header(name: str, value: str) -> tuple[str, bytes]:
    # A few dozen event types and topics: one tuple each, not one per record (less for the GC).
    return name, value.encode()
