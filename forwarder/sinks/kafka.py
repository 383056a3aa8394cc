"""Kafka sink: the seed's JSON record per event, keyed by user, delivered once the broker acked it.

With acks=0 the broker sends no acknowledgement: a record counts as delivered once the client
has written it to the socket, and a record lost after that goes unnoticed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import msgspec
import structlog
from kafka import KafkaProducer
from kafka import errors as kafka_errors
from kafka.net.compat import KafkaNetClient

from emitter.contract import SYSTEM_KEY, Envelope
from forwarder.deadletter import utc_timestamp
from forwarder.errors import PermanentSinkError, RetriableSinkError, SinkError
from forwarder.settings import KafkaSettings
from forwarder.sinks.base import Delivery, Sink

__all__ = ["KafkaSink", "ProducerFactory", "kafka_value", "producer_config", "translate_error"]

ProducerFactory = Callable[[dict[str, Any]], KafkaProducer]

SOURCE: Final = "openalgo"
VERSION: Final = "1.0"

_MAX_BLOCK_MS: Final = 5000
"""Longest the constructor waits for a broker and send() for metadata (the library: 30 s, 60 s)."""
_RECONNECT_BACKOFF_MAX_MS: Final = 1000
"""A producer that lost its broker notices its return within a second, not the library's 30."""
_ACK_GRACE_S: Final = 5.0
"""Slack past the producer's own delivery timeout before a record still pending counts as lost."""
_CLOSE_TIMEOUT_S: Final = 2.0
_ACKS: Final[dict[str, int | str]] = {"0": 0, "1": 1, "all": "all"}
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

_RETRIABLE_ANYWAY: Final = (
    kafka_errors.OutOfOrderSequenceNumberError,
    kafka_errors.UnknownProducerIdError,
    kafka_errors.InvalidProducerEpochError,
    kafka_errors.IllegalStateError,
)
"""Not retriable to the library, yet a new producer delivers: the broker forgot this producer
(restarted, say) and the epoch bump failed what was in flight, or the producer was closed."""

_RECORD_REJECTIONS: Final = (
    kafka_errors.MessageSizeTooLargeError,
    kafka_errors.RecordListTooLargeError,
    kafka_errors.InvalidRecordError,
)
"""Refusals of one record that leave the producer fit to send the others."""

_UNENCODABLE: Final = (msgspec.EncodeError, TypeError)

log = structlog.get_logger("forwarder.sinks.kafka")


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


def _headers(envelope: Envelope) -> list[tuple[str, bytes]]:
    return [("event_type", envelope.event.encode()), ("event_id", envelope.id.encode())]


def producer_config(settings: KafkaSettings) -> dict[str, Any]:
    """kafka-python producer arguments: the settings, plus bounds on every wait the library has."""
    idempotent = settings.acks == "all" and settings.retries > 0
    max_block_ms = min(_MAX_BLOCK_MS, settings.request_timeout_ms)
    config: dict[str, Any] = {
        "bootstrap_servers": list(settings.bootstrap_servers),
        "client_id": settings.client_id,
        "acks": _ACKS[settings.acks],
        "compression_type": None if settings.compression == "none" else settings.compression,
        "batch_size": settings.batch_size,
        "linger_ms": settings.linger_ms,
        "retries": settings.retries,
        "request_timeout_ms": settings.request_timeout_ms,
        # One request's worth: longer waits belong to the forwarder's own retry with backoff.
        "delivery_timeout_ms": settings.request_timeout_ms + settings.linger_ms,
        "max_block_ms": max_block_ms,
        "bootstrap_timeout_ms": max_block_ms,
        "reconnect_backoff_max_ms": _RECONNECT_BACKOFF_MAX_MS,
        "enable_idempotence": idempotent,
        # Without idempotence, a retried request could overtake the one after it.
        "max_in_flight_requests_per_connection": 5 if idempotent else 1,
        "security_protocol": settings.security_protocol,
    }
    optional = {
        "sasl_mechanism": settings.sasl_mechanism,
        "sasl_plain_username": settings.sasl_username,
        "sasl_plain_password": settings.sasl_password,
        "ssl_cafile": settings.ssl_cafile,
        "ssl_certfile": settings.ssl_certfile,
        "ssl_keyfile": settings.ssl_keyfile,
    }
    config.update({name: value for name, value in optional.items() if value is not None})
    return config


def translate_error(exc: BaseException) -> SinkError:
    """The forwarder's error for a client failure: may a later attempt succeed? Cause chained."""
    reason = (
        str(exc) if isinstance(exc, kafka_errors.KafkaError) else f"{type(exc).__name__}: {exc}"
    )
    if _retriable(exc):
        return _chained(RetriableSinkError(reason), exc)
    return _chained(PermanentSinkError(reason), exc)


def _chained(error: SinkError, cause: BaseException) -> SinkError:
    error.__cause__ = cause
    return error


def _retriable(exc: BaseException) -> bool:
    if isinstance(exc, _RETRIABLE_ANYWAY):
        return True
    if isinstance(exc, kafka_errors.KafkaError):
        return bool(exc.retriable)
    return isinstance(exc, OSError)


def _spoils_producer(error: SinkError) -> bool:
    # A missing acknowledgement (no cause) may still be in flight: the old producer must go.
    return not isinstance(error.__cause__, (*_RECORD_REJECTIONS, *_UNENCODABLE))


class KafkaSink(Sink):
    """Sends through one lazily created producer, rebuilt after failures that may leave it stuck."""

    name = "kafka"

    def __init__(
        self, settings: KafkaSettings, producer_factory: ProducerFactory | None = None
    ) -> None:
        self._settings = settings
        self._config = producer_config(settings)
        self._factory: ProducerFactory = producer_factory or _new_producer
        self._producer: Any = None
        self._ack_timeout_s = self._config["delivery_timeout_ms"] / 1000 + _ACK_GRACE_S

    def deliver(self, batch: Sequence[Envelope]) -> Delivery:
        """One attempt: send all, wait until the broker acked or refused each or time ran out."""
        if self._producer is None:
            self._producer = self._create()
        producer = self._producer
        failed: dict[int, SinkError] = {}
        futures = self._send(producer, batch, failed)
        self._await_acks(producer, futures, failed)
        if any(_spoils_producer(error) for error in failed.values()):
            self._reset(failed)
        return Delivery(failed=failed)

    def _send(
        self, producer: Any, batch: Sequence[Envelope], failed: dict[int, SinkError]
    ) -> dict[int, Any]:
        futures: dict[int, Any] = {}
        for index, envelope in enumerate(batch):
            try:
                value = kafka_value(envelope)
            except _UNENCODABLE as exc:
                failed[index] = _chained(
                    PermanentSinkError(f"data cannot be written as JSON: {exc}"), exc
                )
                continue
            try:
                futures[index] = producer.send(
                    self._settings.topic,
                    value=value,
                    key=envelope.key.encode(),
                    headers=_headers(envelope),
                )
            except Exception as exc:
                failed[index] = translate_error(exc)
                if isinstance(failed[index], RetriableSinkError):
                    # The rest would wait as long, and on retry this event would land behind them.
                    failed.update(dict.fromkeys(range(index + 1, len(batch)), failed[index]))
                    break
        return futures

    def _await_acks(
        self, producer: Any, futures: dict[int, Any], failed: dict[int, SinkError]
    ) -> None:
        # A flush that times out is no answer: the records still pending are reported below.
        with contextlib.suppress(kafka_errors.KafkaError):
            producer.flush(timeout=self._ack_timeout_s)
        for index, future in futures.items():
            if not future.is_done:
                failed[index] = RetriableSinkError(
                    f"no acknowledgement from Kafka within {self._ack_timeout_s:.0f} s"
                )
            elif future.failed():
                failed[index] = translate_error(future.exception)

    def check(self) -> str:
        """Bootstrap a fresh producer and ask for the topic's partitions: no cached answer."""
        producer = self._create()
        servers = ",".join(self._settings.bootstrap_servers)
        topic = self._settings.topic
        try:
            partitions = producer.partitions_for(topic)
        except kafka_errors.KafkaTimeoutError as exc:
            error = RetriableSinkError(
                f"reached Kafka at {servers} but got no metadata for topic {topic} "
                f"within {self._config['max_block_ms'] / 1000:.0f} s: does the topic exist, "
                "or may the cluster create it?"
            )
            raise error from exc
        except Exception as exc:
            raise translate_error(exc) from exc
        finally:
            _close(producer)
        return (
            f"Kafka at {servers}: topic {topic} has {len(partitions)} partition(s), "
            f"acks={self._settings.acks}, compression={self._settings.compression}"
        )

    def close(self) -> None:
        """Give pending records a moment, then close the producer."""
        producer, self._producer = self._producer, None
        if producer is not None:
            _close(producer)
            log.info("producer_closed", sink=self.name)

    def _create(self) -> Any:
        settings = self._settings
        try:
            producer = self._factory(self._config)
        except Exception as exc:
            error = translate_error(exc)
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
            servers=list(settings.bootstrap_servers),
            topic=settings.topic,
            acks=settings.acks,
            compression=settings.compression,
            idempotent=self._config["enable_idempotence"],
            security_protocol=settings.security_protocol,
        )
        return producer

    def _reset(self, failed: dict[int, SinkError]) -> None:
        # A producer with a bumped epoch, a dead connection or expired records is rebuilt next time.
        producer, self._producer = self._producer, None
        if producer is not None:
            reasons = sorted({str(error) for error in failed.values()})
            log.warning("producer_reset", sink=self.name, failed=len(failed), reasons=reasons[:3])
            _close(producer)


def _new_producer(config: dict[str, Any]) -> KafkaProducer:
    """A producer; when its constructor fails, the network client it made is closed, not leaked."""
    clients: list[Any] = []

    def client(**kwargs: Any) -> Any:
        clients.append(KafkaNetClient(**kwargs))
        return clients[-1]

    try:
        return KafkaProducer(kafka_client=client, **config)
    except BaseException:
        for made in clients:
            made.close()
        raise


def _close(producer: Any) -> None:
    try:
        producer.close(timeout=_CLOSE_TIMEOUT_S)
    except kafka_errors.KafkaError as exc:
        log.warning("producer_close_failed", error=str(exc))
