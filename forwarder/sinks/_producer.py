"""What the Kafka sinks share whichever client sends: one attempt per batch, the same bounds.

A backend only builds a producer and implements the small hooks below; when an event counts as
delivered, which failures are retried and when the producer is rebuilt is decided here, once.

With acks=0 the broker sends no acknowledgement: a record counts as delivered once the client
has written it to the socket, and a record lost after that goes unnoticed.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import Any, Final

import structlog

from emitter.contract import Envelope
from forwarder.errors import PermanentSinkError, RetriableSinkError, SinkError
from forwarder.sinks.base import Delivery, Sink
from forwarder.sinks.kafka_record import UNENCODABLE, kafka_value
from forwarder.sinks.settings import KafkaSettings

__all__ = [
    "CLOSE_TIMEOUT_S",
    "RECONNECT_BACKOFF_MAX_MS",
    "ProducerSink",
    "chained",
    "classified",
    "delivery_timeout_ms",
    "idempotent",
    "log",
    "max_block_ms",
    "max_in_flight",
    "security_config",
]

RECONNECT_BACKOFF_MAX_MS: Final = 1000
"""A producer that lost its broker notices its return within a second, not the library's 30."""
CLOSE_TIMEOUT_S: Final = 2.0
"""How long closing a producer waits for records still pending."""
_MAX_BLOCK_MS: Final = 5000
"""Longest a client call waits for a broker or for metadata (kafka-python: 30 s, 60 s)."""
_ACK_GRACE_S: Final = 5.0
"""Slack past the producer's own delivery timeout before a record still pending counts as lost."""

log = structlog.get_logger("forwarder.sinks.kafka")


def idempotent(settings: KafkaSettings) -> bool:
    """The idempotent producer needs acks=all and retries; without it one request is in flight."""
    return settings.acks == "all" and settings.retries > 0


def max_in_flight(settings: KafkaSettings) -> int:
    """Without idempotence, a retried request could overtake the one after it: one at a time."""
    return 5 if idempotent(settings) else 1


def delivery_timeout_ms(settings: KafkaSettings) -> int:
    """One request's worth: longer waits belong to the forwarder's own retry with backoff."""
    return settings.request_timeout_ms + settings.linger_ms


def max_block_ms(settings: KafkaSettings) -> int:
    """Longest a client call may wait for a broker: no longer than a request may take."""
    return min(_MAX_BLOCK_MS, settings.request_timeout_ms)


def security_config(settings: KafkaSettings, names: dict[str, str]) -> dict[str, Any]:
    """The SASL and TLS settings that are set, under the client's own names for them."""
    values = {field: getattr(settings, field) for field in names}
    return {names[field]: value for field, value in values.items() if value is not None}


def chained(error: SinkError, cause: BaseException) -> SinkError:
    """`error` caused by `cause`, for callers that return the error rather than raise it."""
    error.__cause__ = cause
    return error


def classified(reason: str, cause: BaseException, *, retriable: bool) -> SinkError:
    """The forwarder's error for a client's failure: may a later attempt succeed? Cause chained."""
    error_class = RetriableSinkError if retriable else PermanentSinkError
    return chained(error_class(reason), cause)


class ProducerSink(Sink):
    """Sends through one lazily created producer, rebuilt after failures that may leave it stuck."""

    name = "kafka"

    def __init__(self, settings: KafkaSettings) -> None:
        self._settings = settings
        self._producer: Any = None
        self._ack_timeout_s = delivery_timeout_ms(settings) / 1000 + _ACK_GRACE_S

    @abstractmethod
    def _new_producer(self) -> Any:
        """A producer for the settings; raises the client's error when it cannot be made."""
        raise NotImplementedError

    @abstractmethod
    def _produce(self, producer: Any, envelope: Envelope, value: bytes) -> Any:
        """Queue one record; the handle returned tells `_outcome` what became of it."""
        raise NotImplementedError

    @abstractmethod
    def _flush(self, producer: Any, timeout_s: float) -> None:
        """Wait until every queued record was acknowledged or failed, or the time is up."""
        raise NotImplementedError

    @abstractmethod
    def _outcome(self, handle: Any) -> tuple[bool, BaseException | None]:
        """Whether the record is settled, and the client's error if it failed."""
        raise NotImplementedError

    @abstractmethod
    def _translate(self, exc: BaseException) -> SinkError:
        """The forwarder's error for a client failure, the cause chained."""
        raise NotImplementedError

    @abstractmethod
    def _rejects_one_record(self, exc: BaseException) -> bool:
        """A refusal of one record that leaves the producer fit to send the others."""
        raise NotImplementedError

    @abstractmethod
    def _partition_count(self, producer: Any) -> int:
        """The topic's partitions, asked of the broker; raises SinkError when it cannot tell."""
        raise NotImplementedError

    @abstractmethod
    def _close_producer(self, producer: Any) -> None:
        """Give pending records CLOSE_TIMEOUT_S, then release the producer."""
        raise NotImplementedError

    def deliver(self, batch: Sequence[Envelope]) -> Delivery:
        """One attempt: send all, wait until the broker acked or refused each or time ran out."""
        if self._producer is None:
            self._producer = self._create()
        producer = self._producer
        failed: dict[int, SinkError] = {}
        handles = self._send(producer, batch, failed)
        self._flush(producer, self._ack_timeout_s)
        for index, handle in handles.items():
            settled, exc = self._outcome(handle)
            if not settled:
                failed[index] = RetriableSinkError(
                    f"no acknowledgement from Kafka within {self._ack_timeout_s:.0f} s"
                )
            elif exc is not None:
                failed[index] = self._translate(exc)
        if any(self._spoils_producer(error) for error in failed.values()):
            self._reset(failed)
        return Delivery(failed=failed)

    def _send(
        self, producer: Any, batch: Sequence[Envelope], failed: dict[int, SinkError]
    ) -> dict[int, Any]:
        handles: dict[int, Any] = {}
        for index, envelope in enumerate(batch):
            try:
                value = kafka_value(envelope)
            except UNENCODABLE as exc:
                failed[index] = chained(
                    PermanentSinkError(f"data cannot be written as JSON: {exc}"), exc
                )
                continue
            try:
                handles[index] = self._produce(producer, envelope, value)
            except Exception as exc:
                failed[index] = self._translate(exc)
                if isinstance(failed[index], RetriableSinkError):
                    # The rest would wait as long, and on retry this event would land behind them.
                    failed.update(dict.fromkeys(range(index + 1, len(batch)), failed[index]))
                    break
        return handles

    def _spoils_producer(self, error: SinkError) -> bool:
        # A missing acknowledgement (no cause) may still be in flight: the old producer must go.
        cause = error.__cause__
        if cause is None:
            return True
        return not isinstance(cause, UNENCODABLE) and not self._rejects_one_record(cause)

    def check(self) -> str:
        """Make a fresh producer and ask for the topic's partitions: no cached answer."""
        producer = self._create()
        try:
            partitions = self._partition_count(producer)
        finally:
            self._close_producer(producer)
        settings = self._settings
        return (
            f"Kafka at {self._servers}: topic {settings.topic} has {partitions} partition(s), "
            f"acks={settings.acks}, compression={settings.compression}"
        )

    def _no_metadata(self) -> RetriableSinkError:
        """The broker answered but named no partition of the topic within the bounded wait."""
        return RetriableSinkError(
            f"reached Kafka at {self._servers} but got no metadata for topic "
            f"{self._settings.topic} within {max_block_ms(self._settings) / 1000:.0f} s: "
            "does the topic exist, or may the cluster create it?"
        )

    @property
    def _servers(self) -> str:
        return ",".join(self._settings.bootstrap_servers)

    def close(self) -> None:
        """Give pending records a moment, then close the producer."""
        producer, self._producer = self._producer, None
        if producer is not None:
            self._close_producer(producer)
            log.info("producer_closed", sink=self.name)

    def _create(self) -> Any:
        settings = self._settings
        try:
            producer = self._new_producer()
        except Exception as exc:
            error = self._translate(exc)
            log.warning(
                "producer_failed",
                sink=self.name,
                servers=list(settings.bootstrap_servers),
                retriable=isinstance(error, RetriableSinkError),
                error=str(error),
            )
            raise error from exc
        log.info(
            "producer_created",
            sink=self.name,
            client=settings.client,
            servers=list(settings.bootstrap_servers),
            topic=settings.topic,
            acks=settings.acks,
            compression=settings.compression,
            idempotent=idempotent(settings),
            security_protocol=settings.security_protocol,
        )
        return producer

    def _reset(self, failed: dict[int, SinkError]) -> None:
        # A producer with a bumped epoch, a dead connection or expired records is rebuilt next time.
        producer, self._producer = self._producer, None
        if producer is not None:
            reasons = sorted({str(error) for error in failed.values()})
            log.warning("producer_reset", sink=self.name, failed=len(failed), reasons=reasons[:3])
            self._close_producer(producer)
