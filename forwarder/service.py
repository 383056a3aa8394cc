"""The daemon's pipeline: receive -> decode -> dead-letter or dispatch -> sink workers."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from typing import Final

import structlog

from emitter.contract import Envelope, InvalidEnvelope, decode_envelope
from forwarder.backlog import Store, open_store
from forwarder.control import ControlServer, control_path
from forwarder.deadletter import DeadLetters, frame_event_id
from forwarder.metrics import BatchLatency, MetricsServer
from forwarder.notify import Notifier
from forwarder.retry import Clock, SystemClock
from forwarder.settings import Settings
from forwarder.sinks.base import Sink
from forwarder.source import MAX_FRAMES, Source
from forwarder.state_lock import StateLock
from forwarder.stats import Stats
from forwarder.worker import SinkWorker

__all__ = ["Forwarder"]

_POLL_MS: Final = 200
_STATUS_S: Final = 5.0
"""How often STATUS= is refreshed when systemd runs no watchdog."""
"""Longest wait for a frame before the loop looks at the stop flag and the stats timer."""

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
        self._source = source or Source(settings.endpoint, socket_group=settings.socket_group)
        self._clock = clock or SystemClock()
        self.stats = Stats()
        self._notifier = notifier or Notifier(None)
        self._dead_letters = DeadLetters(
            settings.state_dir, self.stats, settings.dead_letter_max_bytes
        )
        self._latency = BatchLatency()
        self._state_lock = StateLock(settings.state_dir)
        self._store: Store | None = None
        self._workers: list[SinkWorker] = []
        self._control = ControlServer(
            control_path(settings.endpoint, settings.state_dir), self.stats.snapshot
        )
        self._metrics = (
            None
            if settings.metrics_addr is None
            else MetricsServer(settings.metrics_addr, self.stats.snapshot, latency=self._latency)
        )
        self._stop = threading.Event()

    def stop(self) -> None:
        """Ask run() to finish; safe from a signal handler or any thread."""
        self._stop.set()

    def run(self) -> None:
        """Forward until stop(), then deliver what is held within the shutdown timeout."""
        started = False
        try:
            self._dead_letters.prepare()
            self._state_lock.acquire()
            self._store = open_store(self._settings, self._sinks, self.stats, self._dead_letters)
            self._workers = [self._worker(sink, self._store) for sink in self._sinks]
            self._source.bind()
            self._control.start()
            if self._metrics is not None:
                self._metrics.start()
            for worker in self._workers:
                worker.start()
            started = True
            self._notifier.ready(self._status())
            log.info(
                "forwarder_started",
                endpoint=self._source.endpoint,
                modes=list(self._settings.modes),
                sinks=[sink.name for sink in self._sinks],
                buffer=self._settings.buffer,
                held={worker.sink.name: worker.depth() for worker in self._workers},
                pid=os.getpid(),
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
                self._store.close()
            self._control.close()
            if self._metrics is not None:
                self._metrics.close()
            self._notifier.close()
            self._state_lock.release()

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

    def _receive_until_stopped(self) -> None:
        interval = self._settings.stats_interval_s
        next_stats = self._clock.monotonic() + interval
        next_ping = self._clock.monotonic()
        while not self._stop.is_set():
            self._dispatch(self._source.receive(_POLL_MS))
            now = self._clock.monotonic()
            self.stats.loop_at = time.monotonic()
            if now >= next_ping:
                self._notifier.watchdog()
                self._notifier.status(self._status())
                next_ping = now + (self._notifier.watchdog_interval_s or _STATUS_S)
            if interval and now >= next_stats:
                log.info("stats", **self.stats.snapshot())
                next_stats = now + interval

    def _status(self) -> str:
        """One line for `systemctl status`: what came in and where each sink stands."""
        parts = [f"received {self.stats.received}"]
        for worker in self._workers:
            counters = worker.counters
            state = "retrying" if counters.retrying_since is not None else "ok"
            parts.append(
                f"{worker.sink.name} {state}: delivered {counters.delivered}, "
                f"queued {worker.depth()}"
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
        if self._store is not None:
            self._store.put(valid, envelopes)

    def _drain_workers(self) -> None:
        deadline = self._clock.monotonic() + self._settings.shutdown_timeout_s
        for worker in self._workers:
            worker.drain(deadline)
        for worker in self._workers:
            worker.join(deadline - self._clock.monotonic())
        log.info(
            "forwarder_stopped",
            undelivered={worker.sink.name: worker.depth() for worker in self._workers},
            **self.stats.snapshot(),
        )

    def _close_sinks(self) -> None:
        for sink in self._sinks:
            try:
                sink.close()
            except Exception:
                log.exception("sink_close_failed", sink=sink.name)
