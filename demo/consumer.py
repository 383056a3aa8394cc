"""Read back what reached the Kafka topic, as a downstream consumer of the seed's format would."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from harness.broker import Record, read_records

__all__ = ["KafkaRecord", "read_topic"]


@dataclass(frozen=True)
class KafkaRecord:
    """One record: where it sits, its key, and the JSON value's fields the demo shows."""

    partition: int
    offset: int
    key: str
    event_id: str
    event_type: str
    user_id: str
    data: dict[str, Any]


def read_topic(bootstrap: str, topic: str, count: int, deadline: float) -> list[KafkaRecord]:
    """Every record once `count` distinct events arrived and the end was reached, or those read
    by `deadline`."""
    timeout = max(0.0, deadline - time.monotonic())
    return [_record(message) for message in read_records(bootstrap, topic, count, timeout)]


def _record(message: Record) -> KafkaRecord:
    value = json.loads(message.value)
    return KafkaRecord(
        partition=message.partition,
        offset=message.offset,
        key=message.key.decode() if message.key is not None else "",
        event_id=value["event_id"],
        event_type=value["event_type"],
        user_id=value["user_id"],
        data=value["data"],
    )
