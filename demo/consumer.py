"""Read back what reached the Kafka topic, as a downstream consumer of the seed's format would."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Final

from kafka import KafkaConsumer, TopicPartition

__all__ = ["KafkaRecord", "read_topic"]

_POLL_MS: Final = 200


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
    """Every record once `count` arrived and the end was reached, or those read by `deadline`.

    The embedded broker serves no consumer groups, so partitions are assigned and read from the
    start; reading on to the end of each shows duplicates as extra records.
    """
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap.split(","),
        enable_auto_commit=False,
        allow_auto_create_topics=False,
    )
    records: list[KafkaRecord] = []
    try:
        partitions = _partitions(consumer, topic, deadline)
        if not partitions:
            return records
        consumer.assign(partitions)
        consumer.seek_to_beginning()
        while time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=_POLL_MS).values():
                records.extend(_record(message) for message in batch)
            if len(records) >= count and _caught_up(consumer, partitions):
                break
    finally:
        consumer.close()
    return records


def _partitions(consumer: Any, topic: str, deadline: float) -> list[Any]:
    """The topic's partitions; none if the topic never appeared (nothing was written to it)."""
    while time.monotonic() < deadline:
        found = consumer.partitions_for_topic(topic)
        if found:
            return [TopicPartition(topic, partition) for partition in sorted(found)]
        time.sleep(0.1)
    return []


def _caught_up(consumer: Any, partitions: list[Any]) -> bool:
    ends = consumer.end_offsets(partitions)
    return all(consumer.position(tp) >= ends[tp] for tp in partitions)


def _record(message: Any) -> KafkaRecord:
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
