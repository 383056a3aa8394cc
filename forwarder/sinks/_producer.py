"""What the Kafka sinks share whichever client sends: batches in flight, in order, the same bounds.

A backend only builds a producer and implements the small hooks below; when an event counts as
delivered, which failures are retried and when the producer is replaced is decided here, once.

Several batches are in flight at once: each is handed to the client (`send`) without waiting for
the one before, and the worker takes their answers oldest first. Why per-key order survives:

1. One producer keeps each partition's order. With KAFKA_PRODUCER_ACKS=all and retries the
   producer is idempotent: the broker writes a partition's records only in sequence, so the
   client's own retries cannot reorder them, and what one producer got written is a contiguous
   run of what it was given (librdkafka is also told to stop rather than leave a gap). Without
   idempotence one request per connection is in flight, so a retry has nothing to overtake.
2. A producer that failed a record is fenced before it sends anything later: the first failure
   (a record refused, retries exhausted, an epoch bumped, a connection lost for good) stops it.
   kafka-python reports in its sender thread, which is stopped from within that report, before
   it drains another batch; librdkafka's reports reach this thread, which purges the producer of
   what it has not sent before it hands it anything more, gives what is on the wire one request
   timeout to be answered (so what the broker wrote is not sent twice), then purges the rest.
   Every later record of that producer then fails. Without idempotence librdkafka's own thread
   may send a request between its report and the purge: kafka-python is the safer client there.
3. The forwarder gives up on an unanswered batch before the client would: a batch has a bound
   (one request timeout plus the linger) from when it becomes the oldest, and the client's own
   delivery timeout is longer than the wait for all batches in flight. So a client never expires
   a record on its own and carries on with the ones behind it; the forwarder fences first.
4. The worker then sends every failed event again, oldest first, through a new producer, before
   anything newer. The old producer may still have records on the wire that the broker writes
   late; they are a contiguous run of events (1.) that the new producer sends again from an
   earlier point, so each event's first copy in the log still comes after those of the events
   before it. Later copies are duplicates, recognisable by `event_id`.
5. The buffer position advances only over the contiguous prefix of finished batches (the store's
   `done`), so a crash never skips an unacknowledged event.

With acks=0 the broker sends no acknowledgement: a record counts as delivered once the client
has written it to the socket, and a record lost after that goes unnoticed.
"""

from __future__ import annotations

import threading
from abc import abstractmethod
from collections.abc import Sequence
from typing import Any, Final

import structlog

from emitter.contract import Envelope
from forwarder.errors import PermanentSinkError, RetriableSinkError, SinkError
from forwarder.record import UNENCODABLE, KafkaRecord, kafka_record
from forwarder.sinks.base import Delivery, InFlight, Sink
from forwarder.sinks.settings import KafkaSettings

__all__ = [
    "CLOSE_TIMEOUT_S",
    "RECONNECT_BACKOFF_MAX_MS",
    "ProducerSink",
    "Sending",
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
_CLIENT_GRACE_MS: Final = 5000
"""How much longer than the forwarder the client waits before it expires a record itself."""
MAX_QUEUED_BYTES: Final = 64 << 20
"""Bytes of values handed to the client and not yet answered before the next batch waits."""
_PENDING, _ACKED, _FAILED = 0, 1, 2

log = structlog.get_logger("forwarder.sinks.kafka")


def idempotent(settings: KafkaSettings) -> bool:
    """The idempotent producer needs acks=all and retries; without it one request is in flight."""
    return settings.acks == "all" and settings.retries > 0


def max_in_flight(settings: KafkaSettings) -> int:
    """Without idempotence, a retried request could overtake the one after it: one at a time."""
    return 5 if idempotent(settings) else 1


def batch_timeout_ms(settings: KafkaSettings) -> int:
    """How long the oldest batch may go unanswered: one request's worth, then a new producer."""
    return settings.request_timeout_ms + settings.linger_ms


def delivery_timeout_ms(settings: KafkaSettings) -> int:
    """The client's own limit: past the forwarder's wait for every batch in flight (see 3.)."""
    return (settings.batches_in_flight + 1) * batch_timeout_ms(settings) + _CLIENT_GRACE_MS


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


class _Producer:
    """One producer and, once fenced, why: every record it still holds then fails."""

    __slots__ = ("client", "fenced", "spoiled")

    def __init__(self, client: Any) -> None:
        self.client = client
        self.fenced: str | None = None
        self.spoiled = False
        """A record failed in a way that may leave a gap: fence before anything else is sent."""


class Sending(InFlight):
    """One batch in the client's hands; the client's reports land in `settle`, any thread."""

    __slots__ = ("_done", "_errors", "_lock", "_producer", "_remaining", "_sink", "_state", "size")

    def __init__(self, sink: ProducerSink, producer: _Producer, count: int) -> None:
        self._sink = sink
        self._producer = producer
        self._state = bytearray(count)
        self._errors: dict[int, SinkError] = {}
        self._remaining = count
        self._lock = threading.Lock()
        """Reports come from the client's thread while `send` may still refuse a record."""
        self._done = threading.Event()
        if not count:
            self._done.set()
        self.size = 0
        """Bytes of the values handed to the client."""

    def settle(self, index: int, error: BaseException | None) -> None:
        """The client's report on one record; a failure that may leave a gap stops its producer."""
        if error is None:
            self._state[index] = _ACKED
        elif self._producer.fenced is not None:
            # Failed by the fence itself: the reason is the fence's, not the client's words for it.
            self._fail(index, self._unanswered())
        else:
            self._fail(index, self._sink._translate(error))
            if self._sink._spoils_producer(self._errors[index]):
                self._producer.spoiled = True
                self._sink._stop(self._producer.client)
        self._count_down()

    def refuse(self, index: int, error: SinkError) -> None:
        """A record the client refused at once; it never reached the producer."""
        self._fail(index, error)
        self._count_down()

    def _count_down(self) -> None:
        with self._lock:
            self._remaining -= 1
            if self._remaining == 0:
                self._done.set()

    def _fail(self, index: int, error: SinkError) -> None:
        self._state[index] = _FAILED
        self._errors[index] = error

    def _unanswered(self) -> RetriableSinkError:
        return RetriableSinkError(f"{self._producer.fenced}; sent again with a new producer")

    @property
    def settled(self) -> bool:
        """Every record was answered."""
        return self._done.is_set()

    @property
    def spoiled(self) -> bool:
        """A record of this producer failed: stop waiting, the producer is to be fenced."""
        return self._producer.spoiled

    def wait(self, timeout_s: float) -> bool:
        """Block until every record was answered; False when time ran out first."""
        return self._done.wait(timeout_s)

    def result(self, *, hurry: bool) -> Delivery:
        """Wait for the answers within the batch bound; past it, fence the producer."""
        sink, producer = self._sink, self._producer
        try:
            if not self._done.is_set() and producer.fenced is None:
                timeout_s = batch_timeout_ms(sink._settings) / 1000
                if not sink._await(producer.client, self, timeout_s, hurry=hurry):
                    reason = f"no acknowledgement from Kafka within {timeout_s:.0f} s"
                    sink._fence(producer, reason + sink._note())
            if producer.spoiled:
                sink._fence(producer, "a record failed")
        finally:
            # Whatever happened, these bytes no longer count against the bound on what is queued.
            sink._queued_bytes -= self.size
            self.size = 0
        if self._done.is_set():
            return Delivery(failed=self._errors) if self._errors else Delivery()
        unanswered = self._unanswered()
        failed = dict(self._errors)
        for index, state in enumerate(self._state):
            if state == _PENDING:
                failed[index] = unanswered
        return Delivery(failed=failed)


class ProducerSink(Sink):
    """Sends through one lazily created producer, replaced after failures that may leave a gap."""

    name = "kafka"

    def __init__(self, settings: KafkaSettings) -> None:
        self._settings = settings
        self.batches_in_flight = settings.batches_in_flight
        self._producer: _Producer | None = None
        self._queued_bytes = 0

    @abstractmethod
    def _new_producer(self) -> Any:
        """A producer for the settings; raises the client's error when it cannot be made."""
        raise NotImplementedError

    @abstractmethod
    def _produce(self, producer: Any, record: KafkaRecord, sending: Sending, index: int) -> None:
        """Queue one record; the client's report on it goes to `sending.settle(index, error)`."""
        raise NotImplementedError

    @abstractmethod
    def _await(self, producer: Any, sending: Sending, timeout_s: float, *, hurry: bool) -> bool:
        """Wait until `sending` is settled or the time is up; with `hurry`, send all now."""
        raise NotImplementedError

    @abstractmethod
    def _stop(self, producer: Any) -> None:
        """From any thread, a report included: send nothing more than what is on the wire."""
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
    def _close_producer(self, producer: Any, *, fenced: bool) -> None:
        """Release the producer: a fenced one at once, else after CLOSE_TIMEOUT_S for the rest."""
        raise NotImplementedError

    def _note(self) -> str:
        """What the client last said went wrong, for an error that has no cause of its own."""
        return ""

    def deliver(self, batch: Sequence[Envelope]) -> Delivery:
        """One attempt, with a new producer if the last one failed: send all, wait until the
        broker acked or refused each or time ran out."""
        producer = self._producer
        if producer is not None and (producer.spoiled or producer.fenced is not None):
            self._fence(producer, "a record failed")
            self._producer = None
        return self.send(batch).result(hurry=True)

    def has_room(self) -> bool:
        """Another batch may go out while the values not yet answered stay within the bound."""
        return self._queued_bytes < MAX_QUEUED_BYTES

    def send(self, batch: Sequence[Envelope]) -> Sending:
        """Hand every record of the batch to the producer, without waiting for an answer."""
        if self._producer is None:
            self._producer = _Producer(self._create())
        producer = self._producer
        sending = Sending(self, producer, len(batch))
        if producer.spoiled or producer.fenced is not None:
            # Until the worker sent the failed events again (deliver), nothing newer may go.
            refused = RetriableSinkError("not sent: an earlier batch failed")
            for index in range(len(batch)):
                sending.refuse(index, refused)
            return sending
        client = producer.client
        size = 0
        for index, envelope in enumerate(batch):
            try:
                record = kafka_record(envelope)
            except UNENCODABLE as exc:
                sending.refuse(
                    index,
                    chained(PermanentSinkError(f"data cannot be written as JSON: {exc}"), exc),
                )
                continue
            try:
                self._produce(client, record, sending, index)
            except Exception as exc:
                error = self._translate(exc)
                sending.refuse(index, error)
                if self._spoils_producer(error):
                    # The rest would wait as long; sent later, this event would land behind them.
                    producer.spoiled = True
                    for rest in range(index + 1, len(batch)):
                        sending.refuse(rest, error)
                    break
                continue
            size += len(record[0])
        sending.size = size
        self._queued_bytes += size
        return sending

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
            self._close_producer(producer, fenced=False)
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
        if producer is not None and producer.fenced is None:
            self._close_producer(producer.client, fenced=False)
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
            in_flight_batches=self.batches_in_flight,
        )
        return producer

    def _fence(self, producer: _Producer, reason: str) -> None:
        # What the producer still holds fails now; the next batch gets a new producer.
        if producer.fenced is not None:
            return
        producer.fenced = reason
        log.warning("producer_reset", sink=self.name, reason=reason)
        self._stop(producer.client)
        self._close_producer(producer.client, fenced=True)
