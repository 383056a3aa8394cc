"""One thread per sink, so a slow or unreachable sink never holds back the others."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Final

import structlog

from emitter.contract import Envelope, encode_envelope
from forwarder.batcher import Batcher
from forwarder.deadletter import DeadLetters
from forwarder.errors import PermanentSinkError, RetriableSinkError, SinkError
from forwarder.ops.metrics import BatchLatency
from forwarder.retry import Backoff, Clock, SystemClock
from forwarder.settings import Settings
from forwarder.sinks.base import Sink
from forwarder.stats import Stats
from forwarder.store import Batch, Store

__all__ = ["SinkWorker"]

_IDLE_WAIT_S: Final = 0.2
"""How long an idle worker waits for an event before it looks at the stop request again."""

log = structlog.get_logger("forwarder.worker")


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
        while not self._out_of_time():
            batch = self._batcher.next_batch(0 if self._deadline is not None else _IDLE_WAIT_S)
            if batch:
                self._finish(batch)
            elif self._deadline is not None:
                return

    def _finish(self, batch: Batch) -> None:
        """Deliver a batch and release it from the store, unless time ran out with some left."""
        for damaged in batch.damaged:
            self.counters.dead_lettered += damaged.count
            self._stats.count_damage(1)
            self._dead_letters.record(damaged.frame, damaged.reason, sink=self.sink.name)
        wanted = batch.envelopes
        if self.sink.selective:
            wanted = [envelope for envelope in wanted if self.sink.wants(envelope)]
        if not wanted or self.deliver(wanted):
            self._reader.done(batch)

    def _out_of_time(self) -> bool:
        return self._deadline is not None and self._clock.monotonic() >= self._deadline

    def deliver(self, batch: Sequence[Envelope]) -> bool:
        """Deliver until every event is acknowledged or dead-lettered (True), or the drain deadline
        passes (False).

        Events that failed retriably are sent again in their original order before anything newer
        is taken, so a sink never sees events reordered by a retry.
        """
        self._pending = batch
        attempt = 0
        while True:
            attempt += 1
            started = self._clock.monotonic()
            failed = self._attempt(self._pending)
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
            if self.counters.retrying_since is None:
                self.counters.retrying_since = time.monotonic()
            self.counters.last_error = str(retry[0][1])
            if self._out_of_time():
                return False
            self._back_off(attempt, retry[0][1])

    def _attempt(self, batch: Sequence[Envelope]) -> dict[int, SinkError]:
        try:
            return dict(self.sink.deliver(batch).failed)
        except SinkError as exc:
            return dict.fromkeys(range(len(batch)), exc)
        except Exception as exc:
            log.exception("sink_failed", sink=self.sink.name, count=len(batch))
            error = RetriableSinkError(f"unexpected {type(exc).__name__}: {exc}")
            return dict.fromkeys(range(len(batch)), error)

    def _delivered(self, done: list[Envelope], attempt: int, latency_s: float) -> None:
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
