"""The Kafka sink on kafka-python (KAFKA_CLIENT=kafka-python, the default), a pure-Python client."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, Final

from kafka import KafkaProducer
from kafka import errors as kafka_errors
from kafka.net.compat import KafkaNetClient

from forwarder.errors import SinkError
from forwarder.record import KafkaRecord
from forwarder.sinks._producer import (
    CLOSE_TIMEOUT_S,
    RECONNECT_BACKOFF_MAX_MS,
    ProducerSink,
    Sending,
    classified,
    delivery_timeout_ms,
    idempotent,
    log,
    max_block_ms,
    max_in_flight,
    security_config,
)
from forwarder.sinks.settings import KafkaSettings

__all__ = ["KafkaSink", "ProducerFactory", "producer_config", "translate_error"]

ProducerFactory = Callable[[dict[str, Any]], KafkaProducer]

_ACKS: Final[dict[str, int | str]] = {"0": 0, "1": 1, "all": "all"}

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


_SECURITY_NAMES: Final[dict[str, str]] = {
    "sasl_mechanism": "sasl_mechanism",
    "sasl_username": "sasl_plain_username",
    "sasl_password": "sasl_plain_password",
    "ssl_cafile": "ssl_cafile",
    "ssl_certfile": "ssl_certfile",
    "ssl_keyfile": "ssl_keyfile",
}
"""Each SASL and TLS setting by its name in the library."""


def producer_config(settings: KafkaSettings) -> dict[str, Any]:
    """kafka-python producer arguments: the settings, plus bounds on every wait the library has."""
    config: dict[str, Any] = {
        "bootstrap_servers": list(settings.bootstrap_servers),
        "client_id": settings.client_id,
        "acks": _ACKS[settings.acks],
        "compression_type": None if settings.compression == "none" else settings.compression,
        "batch_size": settings.batch_size,
        "linger_ms": settings.linger_ms,
        "retries": settings.retries,
        "request_timeout_ms": settings.request_timeout_ms,
        "delivery_timeout_ms": delivery_timeout_ms(settings),
        "max_block_ms": max_block_ms(settings),
        "bootstrap_timeout_ms": max_block_ms(settings),
        "reconnect_backoff_max_ms": RECONNECT_BACKOFF_MAX_MS,
        "enable_idempotence": idempotent(settings),
        "max_in_flight_requests_per_connection": max_in_flight(settings),
        "security_protocol": settings.security_protocol,
    }
    return config | security_config(settings, _SECURITY_NAMES)


def translate_error(exc: BaseException) -> SinkError:
    """The forwarder's error for a client failure: may a later attempt succeed? Cause chained."""
    reason = (
        str(exc) if isinstance(exc, kafka_errors.KafkaError) else f"{type(exc).__name__}: {exc}"
    )
    return classified(reason, exc, retriable=_retriable(exc))


def _retriable(exc: BaseException) -> bool:
    if isinstance(exc, _RETRIABLE_ANYWAY):
        return True
    if isinstance(exc, kafka_errors.KafkaError):
        return bool(exc.retriable)
    return isinstance(exc, OSError)


class KafkaSink(ProducerSink):
    """The Kafka sink on kafka-python, a pure-Python client; its reports come from its sender."""

    noisy_libraries = ("kafka",)

    def __init__(
        self,
        settings: KafkaSettings,
        producer_factory: ProducerFactory | None = None,
    ) -> None:
        super().__init__(settings)
        self._config = producer_config(settings)
        self._factory: ProducerFactory = producer_factory or _new_producer
        self._topic = settings.topic

    def _new_producer(self) -> Any:
        return self._factory(self._config)

    def _produce(self, producer: Any, record: KafkaRecord, sending: Sending, index: int) -> None:
        value, key, headers = record
        future = producer.send(self._topic, value=value, key=key, headers=headers)
        future.add_callback(_Acked(sending, index))
        future.add_errback(sending.settle, index)

    def _await(self, producer: Any, sending: Sending, timeout_s: float, *, hurry: bool) -> bool:
        if hurry:
            # A flush that times out is no answer: the records still pending say so.
            with contextlib.suppress(kafka_errors.KafkaError):
                producer.flush(timeout=timeout_s)
        return sending.wait(0 if hurry else timeout_s)

    def _stop(self, producer: Any) -> None:
        # The sender stops after the report it is handling and fails what it holds; no other
        # call does that without waiting (close() flushes first), from its own thread included.
        producer._sender.force_close()

    def _translate(self, exc: BaseException) -> SinkError:
        return translate_error(exc)

    def _rejects_one_record(self, exc: BaseException) -> bool:
        return isinstance(exc, _RECORD_REJECTIONS)

    def _partition_count(self, producer: Any) -> int:
        try:
            return len(producer.partitions_for(self._settings.topic))
        except kafka_errors.KafkaTimeoutError as exc:
            raise self._no_metadata() from exc
        except Exception as exc:
            raise translate_error(exc) from exc

    def _close_producer(self, producer: Any, *, fenced: bool) -> None:
        try:
            producer.close(timeout=CLOSE_TIMEOUT_S)
        except kafka_errors.KafkaError as exc:
            if not fenced:
                log.warning("producer_close_failed", error=str(exc))


class _Acked:
    """The success report of one record: one object, not two partials per record."""

    __slots__ = ("index", "sending")

    def __init__(self, sending: Sending, index: int) -> None:
        self.sending = sending
        self.index = index

    def __call__(self, _metadata: Any) -> None:
        self.sending.settle(self.index, None)


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
