"""The Kafka sink on confluent-kafka (KAFKA_CLIENT=confluent): librdkafka, a C client, much faster.

The producer is idempotent whenever kafka-python's would be, so librdkafka's own retries keep
each partition's order; its constructor returns at once, a broker or none. A fatal error (the
idempotent producer fenced, say) fails its records retriably and, like every failure but a
refused record, has the producer rebuilt before the next attempt.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any, Final

from confluent_kafka import KafkaError, KafkaException, Message, Producer

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

__all__ = ["ConfluentKafkaSink", "producer_config", "translate_error"]

_LIBRARY_LOG: Final = logging.getLogger("confluent_kafka")
"""librdkafka writes to stderr unless given a logger; this one the forwarder's logging quiets."""
_METADATA_RETRY_S: Final = 0.1
_QUEUE_FULL_WAIT_S: Final = 0.05
_REPORT_WAIT_S: Final = 0.1
"""Longest poll() between two looks at whether a report spoiled the producer."""

_PERMANENT: Final = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.INVALID_RECORD,
        KafkaError.INVALID_MSG,
        KafkaError.INVALID_TIMESTAMP,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.TOPIC_EXCEPTION,
        KafkaError.POLICY_VIOLATION,
        KafkaError.INVALID_REQUIRED_ACKS,
        KafkaError.UNSUPPORTED_VERSION,
        KafkaError.UNSUPPORTED_FOR_MESSAGE_FORMAT,
        KafkaError.UNSUPPORTED_COMPRESSION_TYPE,
        KafkaError._INVALID_ARG,
    }
)
"""The errors kafka-python calls not retriable; librdkafka's other errors may pass (TOPIC_EXCEPTION
is Kafka's invalid topic). A fatal error (_FATAL, the idempotent producer fenced) is retriable:
the producer is rebuilt and a new one delivers."""

_RECORD_REJECTIONS: Final = frozenset(
    {KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE, KafkaError.INVALID_RECORD}
)
"""Refusals of one record that leave the producer fit to send the others."""

_NO_ANSWER: Final = frozenset(
    {
        KafkaError._MSG_TIMED_OUT,
        KafkaError._TIMED_OUT,
        KafkaError._TRANSPORT,
        KafkaError._FATAL,
    }
)
"""Errors that tell only that something went wrong; the client's last error report says what."""

_NO_PARTITIONS_YET: Final = frozenset(
    {KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC, KafkaError.LEADER_NOT_AVAILABLE}
)
"""What a topic's metadata says while the cluster creates it on first use."""

_SECURITY_NAMES: Final[dict[str, str]] = {
    "sasl_mechanism": "sasl.mechanism",
    "sasl_username": "sasl.username",
    "sasl_password": "sasl.password",
    "ssl_cafile": "ssl.ca.location",
    "ssl_certfile": "ssl.certificate.location",
    "ssl_keyfile": "ssl.key.location",
}
"""Each SASL and TLS setting by its name in the library."""


def producer_config(settings: KafkaSettings) -> dict[str, Any]:
    """librdkafka properties for the settings, bounded as kafka-python's producer is."""
    config: dict[str, Any] = {
        "bootstrap.servers": ",".join(settings.bootstrap_servers),
        "client.id": settings.client_id,
        "acks": settings.acks,
        "compression.type": settings.compression,
        "batch.size": settings.batch_size,
        "linger.ms": settings.linger_ms,
        "retries": settings.retries,
        "request.timeout.ms": settings.request_timeout_ms,
        "message.timeout.ms": delivery_timeout_ms(settings),
        "reconnect.backoff.max.ms": RECONNECT_BACKOFF_MAX_MS,
        "enable.idempotence": idempotent(settings),
        # An idempotent producer that would leave a gap stops instead (a fatal error).
        "enable.gapless.guarantee": idempotent(settings),
        "max.in.flight.requests.per.connection": max_in_flight(settings),
        "security.protocol": settings.security_protocol.lower(),
    }
    if settings.wire_debug:
        config["debug"] = "broker,protocol,security"
    return config | security_config(settings, _SECURITY_NAMES)


def translate_error(exc: BaseException, last_client_error: KafkaError | None = None) -> SinkError:
    """The forwarder's error for a client failure; a bare timeout gets the client's last report."""
    code = _code(exc)
    if code is None:
        reason = f"{type(exc).__name__}: {exc}"
        # BufferError: librdkafka's queue is full, it drains as records are acknowledged.
        retriable = isinstance(exc, (OSError, BufferError))
    else:
        error = exc.args[0]
        reason = f"{error.name()}: {error.str()}"
        if code in _NO_ANSWER and last_client_error is not None:
            reason += f" (last client error: {last_client_error.str()})"
        retriable = code not in _PERMANENT
    return classified(reason, exc, retriable=retriable)


def _code(exc: BaseException) -> int | None:
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        code: int = exc.args[0].code()
        return code
    return None


class ConfluentKafkaSink(ProducerSink):
    """The Kafka sink on librdkafka; delivery reports arrive in this thread, from poll()."""

    noisy_libraries = ("confluent_kafka",)

    def __init__(self, settings: KafkaSettings) -> None:
        super().__init__(settings)
        self._config = producer_config(settings)
        self._client_error: KafkaError | None = None
        self._topic = settings.topic
        self._block_s = max_block_ms(settings) / 1000
        self._answer_s = settings.request_timeout_ms / 1000
        """How long a fenced producer's requests on the wire are given to be answered."""

    def _new_producer(self) -> Producer:
        self._client_error = None
        return Producer({**self._config, "error_cb": self._on_client_error, "logger": _LIBRARY_LOG})

    def _on_client_error(self, error: KafkaError) -> None:
        # "1/1 brokers are down" sums up the reports before it, which name the broker and the cause.
        if error.code() != KafkaError._ALL_BROKERS_DOWN:
            self._client_error = error

    def _produce(self, producer: Any, record: KafkaRecord, sending: Sending, index: int) -> None:
        value, key, headers = record
        report = functools.partial(_report, sending, index)
        try:
            producer.produce(self._topic, value, key, headers=headers, on_delivery=report)
        except BufferError:
            # librdkafka's queue is full; it drains as the broker acknowledges.
            deadline = time.monotonic() + self._block_s
            while True:
                producer.poll(_QUEUE_FULL_WAIT_S)
                try:
                    producer.produce(self._topic, value, key, headers=headers, on_delivery=report)
                except BufferError:
                    if time.monotonic() > deadline:
                        raise
                else:
                    return

    def _await(self, producer: Any, sending: Sending, timeout_s: float, *, hurry: bool) -> bool:
        deadline = time.monotonic() + timeout_s
        while not sending.settled:
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0 or sending.spoiled:
                break
            if hurry:
                producer.flush(min(remaining_s, _REPORT_WAIT_S))
            else:
                producer.poll(min(remaining_s, _REPORT_WAIT_S))
        return sending.settled or sending.spoiled

    def _stop(self, producer: Any) -> None:
        # Reports come from poll() in this thread; the waiting loop sees the flag and fences.
        return

    def _note(self) -> str:
        error = self._client_error
        return "" if error is None else f" (last client error: {error.str()})"

    def _translate(self, exc: BaseException) -> SinkError:
        return translate_error(exc, self._client_error)

    def _rejects_one_record(self, exc: BaseException) -> bool:
        return _code(exc) in _RECORD_REJECTIONS

    def _partition_count(self, producer: Any) -> int:
        topic = self._settings.topic
        wait_s = max_block_ms(self._settings) / 1000
        deadline = time.monotonic() + wait_s
        while (remaining_s := deadline - time.monotonic()) > 0:
            try:
                found = producer.list_topics(topic, timeout=remaining_s).topics[topic]
            except KafkaException as exc:
                error = self._translate(exc)
                raise type(error)(f"Kafka at {self._servers}: {error}") from exc
            if found.error is None and found.partitions:
                return len(found.partitions)
            if found.error is not None and found.error.code() not in _NO_PARTITIONS_YET:
                refusal = KafkaException(found.error)
                raise self._translate(refusal) from refusal
            # A topic the cluster creates on first use has no partitions for a moment.
            time.sleep(_METADATA_RETRY_S)
        raise self._no_metadata()

    def _close_producer(self, producer: Any, *, fenced: bool) -> None:
        if fenced:
            # What it has not sent fails now, never to be sent after a retry the forwarder made;
            # what is on the wire gets its answer first, so what the broker wrote is not sent twice.
            producer.purge(in_queue=True, in_flight=False)
            producer.flush(self._answer_s)
            producer.purge()
            producer.poll(0)
            return
        pending = producer.flush(CLOSE_TIMEOUT_S)
        if pending:
            producer.purge()
            producer.poll(0)
            log.warning(
                "producer_close_failed",
                error=f"{pending} record(s) not acknowledged within {CLOSE_TIMEOUT_S:.0f} s",
            )


def _report(sending: Sending, index: int, error: KafkaError | None, _message: Message) -> None:
    sending.settle(index, None if error is None else KafkaException(error))
