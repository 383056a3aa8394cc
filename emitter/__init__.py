"""Publish OpenAlgo events from the trading process without ever blocking or raising."""

from __future__ import annotations

from emitter.config import ConfigError
from emitter.contract import (
    SCHEMA_VERSION,
    SYSTEM_KEY,
    Envelope,
    InvalidEnvelope,
    decode_envelope,
    encode_envelope,
)
from emitter.publisher import (
    EventPublisher,
    EventPublisherFactory,
    PublisherStats,
    encode_event,
    get_event_publisher,
)
from emitter.transport import DisabledTransport, PushTransport, Transport, TransportStats

__all__ = [
    "SCHEMA_VERSION",
    "SYSTEM_KEY",
    "ConfigError",
    "DisabledTransport",
    "Envelope",
    "EventPublisher",
    "EventPublisherFactory",
    "InvalidEnvelope",
    "PublisherStats",
    "PushTransport",
    "Transport",
    "TransportStats",
    "decode_envelope",
    "encode_envelope",
    "encode_event",
    "get_event_publisher",
]
