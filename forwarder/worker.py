"""One thread per sink, so a slow or unreachable sink never holds back the others.

A worker keeps up to FORWARDER_INFLIGHT_BATCHES batches with its sink before the oldest is
answered, and takes the answers oldest first. When one fails, the sink has stopped sending the
later ones (see forwarder.sinks._producer); the worker sends every event of it and of them that
was not acknowledged again, in order, before anything newer. A batch leaves the backlog only once
finished, and the store releases only the contiguous prefix of finished batches.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Final, TypeVar

import structlog

from emitter.contract import Envelope, encode_envelope
from forwarder.batcher import Batcher
from forwarder.deadletter import DeadLetters
from forwarder.errors import PermanentSinkError, RetriableSinkError, SinkError
from forwarder.ops.metrics import BatchLatency
from forwarder.retry import Backoff, Clock, SystemClock
from forwarder.settings import Settings
from forwarder.sinks.base import Delivery, Done, InFlight, Sink
from forwarder.stats import Stats
from forwarder.store import Batch, Store

__all__ = ["SinkWorker"]

_IDLE_WAIT_S: Final = 0.2
"""How long an idle worker waits for an event before it looks at the stop request again."""

log = structlog.get_logger("forwarder.worker")
_T = TypeVar("_T")


@dataclass(slots=True)
class _Sent:
    """A batch with the sink: what it covers in the backlog, what the sink got, since when."""

    batch: Batch
    wanted: Sequence[Envelope]
    in_flight: InFlight
    started: float


class SinkWorker:
    """Owns the events waiting for a sink: batches them, delivers what the sink wants with retries
    in order, dead-letters refusals and stored events that no longer read, and counts all of it."""

    def __init__(
        self,
        sink: Sink,
        store: Store,
        settings: Settings,
        *,
        stats: Stats,
        dead_letters: DeadLetters,
        clock: Clock | None = None,
        backoff: Backoff | None = None,
        latency: BatchLatency | None = None,
    ) -> None:
        self.sink = sink
        self._clock = clock or SystemClock()
        self._reader = store.reader(sink.name)
        self.counters = stats.add_sink(sink.name, self.waiting, self.oldest_age_s)
        self._stats = stats
        self._batcher = Batcher(
            self._reader,
            max_size=settings.batch_max,
            linger_s=settings.batch_linger_ms / 1000,
            clock=self._clock.monotonic,
        )
        self._max_in_flight = sink.batches_in_flight
        self._backoff = backoff or Backoff(settings.retry_base_ms, settings.retry_max_ms)
        self._dead_letters = dead_letters
        self._latency = latency
        self._pending: Sequence[Envelope] = ()
        self._deadline: float | None = None
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"sink-{sink.name}", daemon=True)

    def waiting(self) -> int:
        """Events this sink has yet to finish, the batch being delivered included."""
        return self._reader.waiting()

    def oldest_age_s(self) -> float | None:
        """Seconds the oldest event this sink has yet to finish has waited."""
        return self._reader.oldest_age_s()

    def start(self) -> None:
        """Start delivering in the background."""
        self._thread.start()

    def drain(self, deadline: float) -> None:
        """Deliver what is queued until the clock reads `deadline`, then stop; does not block."""
        self._deadline = deadline
        self._wake.set()

    def join(self, timeout: float) -> bool:
        """Wait for the worker to finish; True when it did."""
        self._thread.join(max(timeout, 0.0))
        return not self._thread.is_alive()

    def _run(self) -> None:
        sent: deque[_Sent] = deque()
        while not self._out_of_time():
            if len(sent) < self._max_in_flight and self.sink.has_room():
                idle = not sent and self._deadline is None
                batch = self._batcher.next_batch(_IDLE_WAIT_S if idle else 0)
                if batch:
                    sent.append(self._send(batch))
                    continue
            if sent:
                # With nothing else waiting the sink sends what it holds at once (hurry); else
                # the oldest is waited for while the client goes on batching the others.
                waiting = self._reader.waiting() - sum(len(entry.batch) for entry in sent)
                self._settle(sent, hurry=waiting <= 0)
            elif self._deadline is not None:
                return

    def _send(self, batch: Batch) -> _Sent:
        """Dead-letter what no longer reads and hand what the sink wants to it, without waiting."""
        for damaged in batch.damaged:
            self.counters.dead_lettered += damaged.count
            self._stats.count_damage(1)
            self._dead_letters.record(damaged.frame, damaged.reason, sink=self.sink.name)
        wanted = batch.envelopes
        if self.sink.selective:
            wanted = [envelope for envelope in wanted if self.sink.wants(envelope)]
        started = self._clock.monotonic()
        if not wanted:
            return _Sent(batch, wanted, Done(Delivery()), started)
        in_flight = self._guarded(partial(self.sink.send, wanted), len(wanted))
        if isinstance(in_flight, Delivery):
            in_flight = Done(in_flight)
        return _Sent(batch, wanted, in_flight, started)

    def _settle(self, sent: deque[_Sent], *, hurry: bool) -> None:
        """Finish the oldest batch in flight. When it failed, the sink sent nothing after it:
        what was not acknowledged of it and of every later batch goes again as one, in order."""
        entry = sent.popleft()
        failed = self._result(entry, hurry=hurry)
        finished, retry = [entry], []
        while True:
            retry += [
                (entry.wanted[i], error)
                for i, error in sorted(failed.items())
                if not isinstance(error, PermanentSinkError)
            ]
            self._account(entry, failed)
            if not retry or not sent:
                break
            entry = sent.popleft()
            finished.append(entry)
            failed = self._result(entry, hurry=False)
        if not retry or self._retry([envelope for envelope, _ in retry], retry[0][1]):
            self.counters.retrying_since = None
            for entry in finished:
                self._reader.done(entry.batch)

    def _result(self, entry: _Sent, *, hurry: bool) -> dict[int, SinkError]:
        delivery = self._guarded(partial(entry.in_flight.result, hurry=hurry), len(entry.wanted))
        return dict(delivery.failed)

    def _account(self, entry: _Sent, failed: dict[int, SinkError]) -> None:
        """Count what the destination acknowledged and dead-letter what it refused for good."""
        done = (
            entry.wanted
            if not failed
            else [e for i, e in enumerate(entry.wanted) if i not in failed]
        )
        if done:
            self._delivered(done, 1, self._clock.monotonic() - entry.started)
        for index, error in sorted(failed.items()):
            if isinstance(error, PermanentSinkError):
                self._dead_letter(entry.wanted[index], error)

    def _out_of_time(self) -> bool:
        return self._deadline is not None and self._clock.monotonic() >= self._deadline

    def deliver(self, batch: Sequence[Envelope]) -> bool:
        """Deliver until every event is acknowledged or dead-lettered (True), or the drain deadline
        passes (False).

        Events that failed retriably are sent again in their original order before anything newer
        is taken, so a sink never sees events reordered by a retry.
        """
        return self._attempts(batch, attempt=0)

    def _retry(self, batch: Sequence[Envelope], error: SinkError) -> bool:
        """`deliver` for events whose first attempt (in flight) failed: back off first."""
        self._pending = batch
        self._note_failure(error)
        if self._out_of_time():
            return False
        self._back_off(1, error)
        return self._attempts(batch, attempt=1)

    def _attempts(self, batch: Sequence[Envelope], attempt: int) -> bool:
        self._pending = batch
        while True:
            attempt += 1
            started = self._clock.monotonic()
            delivery = self._guarded(partial(self.sink.deliver, self._pending), len(self._pending))
            failed = dict(delivery.failed)
            done = [e for i, e in enumerate(self._pending) if i not in failed]
            if done:
                self._delivered(done, attempt, self._clock.monotonic() - started)
            retry = []
            for index, error in sorted(failed.items()):
                if isinstance(error, PermanentSinkError):
                    self._dead_letter(self._pending[index], error)
                else:
                    retry.append((self._pending[index], error))
            self._pending = [envelope for envelope, _ in retry]
            if not retry:
                self.counters.retrying_since = None
                return True
            self._note_failure(retry[0][1])
            if self._out_of_time():
                return False
            self._back_off(attempt, retry[0][1])

    def _note_failure(self, error: SinkError) -> None:
        if self.counters.retrying_since is None:
            self.counters.retrying_since = time.monotonic()
        self.counters.last_error = str(error)

    def _guarded(self, call: Callable[[], _T], count: int) -> _T | Delivery:
        """What the sink returned, or every event failed by what it raised."""
        try:
            return call()
        except SinkError as exc:
            return Delivery(failed=dict.fromkeys(range(count), exc))
        except Exception as exc:
            log.exception("sink_failed", sink=self.sink.name, count=count)
            error = RetriableSinkError(f"unexpected {type(exc).__name__}: {exc}")
            return Delivery(failed=dict.fromkeys(range(count), error))

    def _delivered(self, done: Sequence[Envelope], attempt: int, latency_s: float) -> None:
        self.counters.delivered += len(done)
        if self._latency is not None:
            self._latency.observe(self.sink.name, latency_s)
        self.counters.batches += 1
        log.info(
            "batch_delivered",
            sink=self.sink.name,
            count=len(done),
            first_id=done[0].id,
            last_id=done[-1].id,
            latency_ms=round(latency_s * 1000, 3),
            age_ms=round((time.time_ns() - done[0].ts) / 1e6, 3),
            attempt=attempt,
        )

    def _dead_letter(self, envelope: Envelope, error: SinkError) -> None:
        self.counters.dead_lettered += 1
        self._dead_letters.record(
            encode_envelope(envelope), str(error), sink=self.sink.name, event_id=envelope.id
        )

    def _back_off(self, attempt: int, error: SinkError) -> None:
        delay = self._backoff.delay_s(attempt - 1)
        if self._deadline is not None:
            delay = min(delay, self._deadline - self._clock.monotonic())
        self.counters.retried += 1
        log.warning(
            "sink_retry",
            sink=self.sink.name,
            error=str(error),
            attempt=attempt,
            delay_ms=round(delay * 1000, 3),
            pending=len(self._pending),
        )
        self._clock.sleep(delay, self._wake)
        self._wake.clear()
