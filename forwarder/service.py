"""The daemon's pipeline: receive -> decode -> dead-letter or dispatch -> sink workers."""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

import structlog

from emitter.contract import Envelope, InvalidEnvelope, decode_envelope, frame_event_id
from emitter.throttle import Throttle
from forwarder.deadletter import DeadLetters
from forwarder.errors import ConfigError, ForwarderError, StartupError
from forwarder.ops.control import ControlServer, control_path
from forwarder.ops.metrics import BatchLatency, MetricsServer
from forwarder.ops.notify import Notifier
from forwarder.retry import Clock, SystemClock
from forwarder.settings import Settings
from forwarder.sinks.base import Sink
from forwarder.source import MAX_FRAMES, Source
from forwarder.state_lock import StateLock
from forwarder.stats import Stats
from forwarder.store import Closed, DiskStore, Salvage, Store, Stored, open_store
from forwarder.worker import SinkWorker

__all__ = ["Forwarder"]

_POLL_MS: Final = 200
"""Longest wait for a frame before the loop looks at the stop flag, the timers and the store."""
_STATUS_S: Final = 5.0
"""How often STATUS= is refreshed when systemd runs no watchdog."""

log = structlog.get_logger("forwarder.service")


class Forwarder:
    """Runs the pipeline in the calling thread; each sink is fed by its own worker thread."""

    def __init__(
        self,
        settings: Settings,
        sinks: Sequence[Sink],
        *,
        source: Source | None = None,
        clock: Clock | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self._settings = settings
        self._sinks = tuple(sinks)
        self._source = source or Source.from_settings(settings)
        self._clock = clock or SystemClock()
        self.stats = Stats()
        self._notifier = notifier or Notifier(None)
        self._dead_letters = DeadLetters.from_settings(settings, self.stats)
        self._latency = BatchLatency()
        self._state_lock = StateLock(settings.state_dir)
        self._store: Store | None = None
        self._drops = _Drops()
        self._workers: list[SinkWorker] = []
        self._control = ControlServer(
            control_path(settings.endpoint, settings.state_dir), self.stats.snapshot
        )
        self._metrics = (
            None
            if settings.metrics is None
            else MetricsServer(settings.metrics.address, self.stats.snapshot, latency=self._latency)
        )
        self._stop = threading.Event()
        self._disconnect_throttle = Throttle()
        self._refused_throttle = Throttle()

    def stop(self) -> None:
        """Ask run() to finish; safe from a signal handler or any thread."""
        self._stop.set()

    def run(self) -> None:
        """Forward until stop(), then deliver what waits within the shutdown timeout.

        Whatever stops the start (a port or socket in use, a locked or unwritable directory)
        is raised as one StartupError (a ConfigError stays one), so the command prints one line.
        """
        started = False
        closed = Closed()
        try:
            self._start()
            started = True
            self._notifier.ready(self._status())
            log.info(
                "forwarder_started",
                endpoint=self._source.endpoint,
                modes=list(self._settings.modes),
                sinks=[sink.name for sink in self._sinks],
                buffer=self._settings.buffer,
                waiting={worker.sink.name: worker.waiting() for worker in self._workers},
                pid=os.getpid(),
                **self._durability(),
            )
            self._receive_until_stopped()
            self._notifier.stopping()
            self._take_what_is_queued()
        finally:
            self._source.close()
            if started:
                self._drain_workers()
            self._close_sinks()
            if self._store is not None:
                closed = self._store.close()
                self._not_stored(closed)
            if started:
                log.info(
                    "forwarder_stopped",
                    waiting={worker.sink.name: worker.waiting() for worker in self._workers},
                    not_stored=dict(closed.not_stored),
                    **self.stats.snapshot().as_dict(),
                )
            self._control.close()
            if self._metrics is not None:
                self._metrics.close()
            self._notifier.close()
            self._state_lock.release()

    def _start(self) -> None:
        try:
            self._dead_letters.prepare()
            self._state_lock.acquire()
            self._store, salvage = open_store(self._settings, [sink.name for sink in self._sinks])
            if salvage is not None:
                self._salvaged(salvage)
            self._workers = [self._worker(sink, self._store) for sink in self._sinks]
            self._count_unconfigured(self._store)
            self._source.bind()
            self._control.start()
            if self._metrics is not None:
                self._metrics.start()
            for worker in self._workers:
                worker.start()
        except (ConfigError, StartupError):
            raise
        except ForwarderError as exc:
            raise StartupError(str(exc)) from exc
        except OSError as exc:
            raise StartupError(f"cannot start: {exc}") from exc
        except Exception as exc:  # unforeseen: one line for the operator, the traceback logged
            log.exception("forwarder_start_failed")
            raise StartupError(f"cannot start: {type(exc).__name__}: {exc}") from exc

    def _worker(self, sink: Sink, store: Store) -> SinkWorker:
        return SinkWorker(
            sink,
            store,
            self._settings,
            stats=self.stats,
            dead_letters=self._dead_letters,
            clock=self._clock,
            latency=self._latency,
        )

    def _salvaged(self, salvage: Salvage) -> None:
        self.stats.count_damage(1)
        log.error(
            "buffer_damaged",
            moved_to=str(salvage.aside),
            reason=salvage.reason,
            salvaged=salvage.salvaged,
            lost=salvage.lost,
        )

    def _count_unconfigured(self, store: Store) -> None:
        """A sink taken out of ORDER_EVENT_MODE keeps its events: counted, and said once."""
        unconfigured = store.unconfigured()
        for name in unconfigured:
            self.stats.add_sink(
                name,
                functools.partial(_unconfigured_waiting, store, name),
                functools.partial(_unconfigured_age_s, store, name),
                configured=False,
            )
        if unconfigured:
            log.warning(
                "waiting_for_unconfigured_sink",
                sinks={name: kept.count for name, kept in unconfigured.items()},
                reason="not in ORDER_EVENT_MODE: delivered first, in order, once it is again",
                discard=[f"openalgo-forwarder backlog discard {name}" for name in unconfigured],
            )

    def _durability(self) -> dict[str, object]:
        """The disk buffer's durability as its live connection has it, for the start line."""
        if not isinstance(self._store, DiskStore):
            return {}
        return {"fsync": self._settings.fsync, "synchronous": self._store.synchronous}

    def _receive_until_stopped(self) -> None:
        interval = self._settings.stats_interval_s
        next_stats = self._clock.monotonic() + interval
        next_ping = self._clock.monotonic()
        while not self._stop.is_set():
            self._dispatch(self._source.receive(_POLL_MS))
            self._count_connection_events()
            if self._store is not None:
                self._account(self._store.maintain())
            now = self._clock.monotonic()
            self.stats.loop_at = time.monotonic()
            if now >= next_ping:
                self._notifier.watchdog()
                self._notifier.status(self._status())
                next_ping = now + (self._notifier.watchdog_interval_s or _STATUS_S)
            if interval and now >= next_stats:
                log.info("stats", **self.stats.snapshot().as_dict())
                next_stats = now + interval

    def _count_connection_events(self) -> None:
        ended, refused = self._source.connection_events()
        if ended:
            self.stats.disconnects += ended
            self._report(
                self._disconnect_throttle,
                log.info,
                "emitter_disconnected",
                self.stats.disconnects,
                "an emitting process ended, or sent a frame over FORWARDER_MAX_FRAME_BYTES",
            )
        if refused:
            self.stats.emitters_refused += refused
            self._report(
                self._refused_throttle,
                log.warning,
                "emitter_refused",
                self.stats.emitters_refused,
                "a CURVE handshake failed: a client key not in FORWARDER_CURVE_CLIENTS_FILE, "
                "a wrong server key, or no CURVE",
            )

    @staticmethod
    def _report(
        throttle: Throttle, emit: Callable[..., Any], event: str, total: int, cause: str
    ) -> None:
        if (held := throttle.ready()) is not None:
            emit(event, total=total, suppressed=held, cause=cause)

    def _status(self) -> str:
        """One line for `systemctl status`: what came in and where each sink stands."""
        parts = [f"received {self.stats.received}"]
        for worker in self._workers:
            counters = worker.counters
            state = "retrying" if counters.retrying_since is not None else "ok"
            parts.append(
                f"{worker.sink.name} {state}: delivered {counters.delivered}, "
                f"waiting {worker.waiting()}"
            )
        return "; ".join(parts)

    def _take_what_is_queued(self) -> None:
        """Frames ZeroMQ has already accepted would be lost on close: hand them over too."""
        while True:
            frames = self._source.receive(0)
            self._dispatch(frames)
            if len(frames) < MAX_FRAMES:
                return

    def _dispatch(self, frames: list[bytes]) -> None:
        valid: list[bytes] = []
        envelopes: list[Envelope] = []
        self.stats.received += len(frames)
        for frame in frames:
            try:
                envelopes.append(decode_envelope(frame))
            except InvalidEnvelope as exc:
                self.stats.decode_failures += 1
                self._dead_letters.record(frame, exc.reason, event_id=frame_event_id(frame))
                continue
            valid.append(frame)
        if self._store is not None and valid:
            self._account(self._store.put(valid, envelopes))

    def _account(self, stored: Stored) -> None:
        """Count and report what the store dropped or could not write."""
        for name, count in stored.dropped.items():
            counters = self.stats.sinks[name]
            counters.dropped += count
            self._drops.report(name, stored.reason or "dropped", counters.dropped)
        if stored.error is not None:
            self._drops.write_failed(stored.error, stored.unwritten)

    def _not_stored(self, closed: Closed) -> None:
        """Events the disk never took, lost as the forwarder stops: counted, and said per sink."""
        for name, count in closed.not_stored.items():
            self.stats.sinks[name].dropped += count
        if closed.not_stored:
            log.error("events_not_stored", sinks=dict(closed.not_stored))

    def _drain_workers(self) -> None:
        deadline = self._clock.monotonic() + self._settings.shutdown_timeout_s
        for worker in self._workers:
            worker.drain(deadline)
        for worker in self._workers:
            worker.join(deadline - self._clock.monotonic())

    def _close_sinks(self) -> None:
        for sink in self._sinks:
            try:
                sink.close()
            except Exception:
                log.exception("sink_close_failed", sink=sink.name)


def _unconfigured_waiting(store: Store, sink: str) -> int:
    kept = store.unconfigured().get(sink)
    return 0 if kept is None else kept.count


def _unconfigured_age_s(store: Store, sink: str) -> float | None:
    kept = store.unconfigured().get(sink)
    if kept is None or kept.oldest_ns is None or kept.count <= 0:
        return None
    return max(0.0, (time.time_ns() - kept.oldest_ns) / 1e9)


class _Drops:
    """Says what was dropped and why, per sink, at most once per throttle interval each."""

    def __init__(self) -> None:
        self._throttles: dict[tuple[str, str], Throttle] = {}
        self._write_throttle = Throttle()

    def report(self, sink: str, reason: str, dropped: int) -> None:
        throttle = self._throttles.setdefault((sink, reason), Throttle())
        if (held := throttle.ready()) is not None:
            log.warning("event_dropped", sink=sink, reason=reason, dropped=dropped, suppressed=held)

    def write_failed(self, error: str, unwritten: int) -> None:
        if (held := self._write_throttle.ready()) is not None:
            log.error(
                "buffer_write_failed", error=error, unwritten_in_memory=unwritten, suppressed=held
            )
