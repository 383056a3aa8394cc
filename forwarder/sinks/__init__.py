"""Destinations of events; `build_sinks` imports only those the configured modes use."""

from __future__ import annotations

from forwarder.settings import Settings
from forwarder.sinks.base import Delivery, Sink

__all__ = ["Delivery", "Sink", "build_sinks"]


def build_sinks(settings: Settings) -> list[Sink]:
    """One sink per enabled mode; only the client libraries the settings choose are imported."""
    sinks: list[Sink] = []
    try:
        if settings.kafka is not None and settings.kafka.client == "confluent":
            from forwarder.sinks.kafka_confluent import (  # noqa: PLC0415 - optional dependency
                ConfluentKafkaSink,
            )

            sinks.append(ConfluentKafkaSink(settings.kafka, in_flight=settings.inflight_batches))
        elif settings.kafka is not None:
            from forwarder.sinks.kafka import KafkaSink  # noqa: PLC0415 - optional dependency

            sinks.append(KafkaSink(settings.kafka, in_flight=settings.inflight_batches))
        if settings.socketio is not None:
            from forwarder.sinks.socketio import SocketIOSink  # noqa: PLC0415 - optional dependency

            sinks.append(SocketIOSink(settings.socketio))
    except BaseException:
        for sink in sinks:
            sink.close()
        raise
    return sinks
