"""Hand encoded frames to the forwarder from any thread without the caller ever waiting.

The caller only appends to a bounded deque; a daemon pump thread owns the ZeroMQ socket and
moves frames into it. A raw non-blocking send on an idle pipe costs the caller a syscall to wake
ZeroMQ's I/O thread; the append costs well under a microsecond. The pump polls every millisecond
while events flow and parks after a quiet spell, so only the first event after a pause pays for
waking it, and an idle process spends no CPU here.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

import zmq

from emitter.config import CurveKeys, curve_options

__all__ = [
    "DisabledTransport",
    "PushTransport",
    "ThrottledCounter",
    "Transport",
    "TransportStats",
]

logger = logging.getLogger("emitter")

POLL_S: Final = 0.001
"""Pump tick while events flow: the longest an event waits in the deque."""
PARK_AFTER_S: Final = 0.05
"""Quiet time after which the pump sleeps until a caller wakes it."""
PARK_TIMEOUT_S: Final = 1.0
"""Safety net: even a lost wake-up delays an event by at most this long."""
RETRY_MS: Final = 20
"""How long the pump waits for room while the forwarder is away or slow, before re-checking."""
WARN_INTERVAL_S: Final = 10.0
JOIN_TIMEOUT_S: Final = 1.0


class _ForkAware(Protocol):
    def _reset_after_fork(self) -> None: ...


_fork_aware: weakref.WeakSet[_ForkAware] = weakref.WeakSet()
_open_transports: weakref.WeakSet[PushTransport] = weakref.WeakSet()
_inherited: list[object] = []
"""The parent's sockets and contexts in a forked child: kept alive so they are never closed here."""


def _after_fork_in_child() -> None:
    for obj in list(_fork_aware):
        obj._reset_after_fork()


def _close_all() -> None:
    for transport in list(_open_transports):
        transport.close()


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_close_all)


class ThrottledCounter:
    """An exact count of a recurring problem, logged at most once per interval: floods are cheap."""

    def __init__(
        self,
        problem: str,
        *,
        interval_s: float = WARN_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._problem = problem
        self._interval_s = interval_s
        self._clock = clock
        self._reset_after_fork()
        _fork_aware.add(self)

    def _reset_after_fork(self) -> None:
        self._lock = threading.Lock()
        self._total = 0
        self._unreported = 0
        self._latest = ""
        self._next_report = float("-inf")

    @property
    def total(self) -> int:
        """Occurrences since creation (or since the fork that created this process)."""
        return self._total

    def add(self, detail: str = "") -> None:
        """Count one occurrence; log if the last warning is older than the interval."""
        with self._lock:
            self._total += 1
            self._unreported += 1
            self._latest = detail
            now = self._clock()
            if now < self._next_report:
                return
            self._next_report = now + self._interval_s
            count, self._unreported = self._unreported, 0
        self._log(count, detail)

    def flush(self) -> None:
        """Log what was counted since the last warning, so a final burst is never silent."""
        with self._lock:
            count, self._unreported = self._unreported, 0
            detail = self._latest
        if count:
            self._log(count, detail)

    def _log(self, count: int, detail: str) -> None:
        latest = f" (latest: {detail})" if detail else ""
        logger.warning("%s: %d since the last warning%s", self._problem, count, latest)


@dataclass(frozen=True, slots=True)
class TransportStats:
    """Counters that add up: every frame offered was either queued or dropped."""

    queued: int
    dropped: int


class Transport(Protocol):
    """Where the publisher puts encoded frames; `send` never blocks and never raises."""

    def send(self, frame: bytes) -> bool: ...

    def stats(self) -> TransportStats: ...

    def close(self) -> None: ...


class DisabledTransport:
    """Stands in when a bad setting switched publishing off: every frame is counted as dropped."""

    def __init__(self, reason: str) -> None:
        self._drops = ThrottledCounter(f"events dropped: publishing is disabled ({reason})")

    def send(self, frame: bytes) -> bool:
        """Drop the frame, counted."""
        self._drops.add()
        return False

    def stats(self) -> TransportStats:
        """Nothing is ever queued."""
        return TransportStats(queued=0, dropped=self._drops.total)

    def close(self) -> None:
        """Report the drops not yet logged."""
        self._drops.flush()


class PushTransport:
    """A ZeroMQ PUSH socket behind a bounded deque, fed by callers and drained by a pump thread."""

    def __init__(
        self,
        endpoint: str,
        *,
        hwm: int = 10000,
        linger_ms: int = 500,
        park_timeout_s: float = PARK_TIMEOUT_S,
        curve: CurveKeys | None = None,
    ) -> None:
        self.endpoint = endpoint
        self._curve = curve
        self._hwm = hwm
        self._linger_ms = linger_ms
        self._park_timeout_s = park_timeout_s
        self._closed = False
        self._reset_state()
        _fork_aware.add(self)
        _open_transports.add(self)

    def _reset_state(self) -> None:
        self._queue: deque[bytes] = deque()
        self._lock = threading.Lock()
        """Held by the pump while it moves a frame out, so `stats()` never counts one twice."""
        self._start_lock = threading.Lock()
        self._wake = threading.Event()
        self._parked = True
        """True while no pump is running or it sleeps on `_wake`: the next caller wakes it."""
        self._stopping = False
        self._pump: threading.Thread | None = None
        self._context: zmq.Context[zmq.Socket[bytes]] | None = None
        self._socket: zmq.Socket[bytes] | None = None
        self._taken = 0
        self._drops = ThrottledCounter(
            "events dropped: the queue for the forwarder is full (is the forwarder running?)"
        )

    def _reset_after_fork(self) -> None:
        """A forked child starts empty and opens its own socket; the parent's stay untouched."""
        _inherited.extend(obj for obj in (self._socket, self._context) if obj is not None)
        self._reset_state()

    @property
    def parked(self) -> bool:
        """True while the pump sleeps (or was never started) until the next send wakes it."""
        return self._parked

    def send(self, frame: bytes) -> bool:
        """Queue one frame for the forwarder; False (counted) when the queue is full or closed."""
        queue = self._queue
        if len(queue) >= self._hwm or self._closed:
            self._drops.add()
            return False
        queue.append(frame)
        if self._parked:
            self._unpark()
        return True

    def stats(self) -> TransportStats:
        """Exact counters: frames taken by the pump plus those still waiting are queued."""
        with self._lock:
            queued = self._taken + len(self._queue)
        return TransportStats(queued=queued, dropped=self._drops.total)

    def close(self) -> None:
        """Stop the pump, hand over what fits without waiting, and bound the exit by the linger."""
        with self._start_lock:
            if self._closed:
                return
            self._closed = True
            pump = self._pump
        self._stopping = True
        self._wake.set()
        if pump is not None:
            pump.join(JOIN_TIMEOUT_S)
            if pump.is_alive():
                logger.error("the emitter pump did not stop; its socket is left open")
                return
        self._release()

    def _unpark(self) -> None:
        if self._pump is not None:
            self._wake.set()
            return
        with self._start_lock:
            if self._pump is not None or self._closed:
                return
            pump = threading.Thread(target=self._run, name="emitter-pump", daemon=True)
            try:
                pump.start()
            except RuntimeError:
                logger.exception("cannot start the emitter pump; events stay queued")
                return
            self._pump = pump

    def _run(self) -> None:
        try:
            socket = self._connect()
        except zmq.ZMQError:
            logger.exception("cannot open the emitter socket for %s", self.endpoint)
            return
        self._parked = False
        try:
            self._pump_loop(socket)
        except Exception:  # frames then wait, and drop counted, instead of vanishing silently
            logger.exception("the emitter pump stopped")

    def _pump_loop(self, socket: zmq.Socket[bytes]) -> None:
        queue = self._queue
        idle_until = time.monotonic() + PARK_AFTER_S
        while not self._stopping:
            if queue:
                if not self._drain(socket):
                    socket.poll(RETRY_MS, zmq.POLLOUT)
                idle_until = time.monotonic() + PARK_AFTER_S
            elif time.monotonic() < idle_until:
                time.sleep(POLL_S)
            else:
                self._park()

    def _connect(self) -> zmq.Socket[bytes]:
        context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._context = context
        socket = context.socket(zmq.PUSH)
        self._socket = socket
        socket.setsockopt(zmq.SNDHWM, self._hwm)
        socket.setsockopt(zmq.LINGER, self._linger_ms)
        for option, value in ({} if self._curve is None else curve_options(self._curve)).items():
            socket.setsockopt(option, value)
        socket.connect(self.endpoint)
        return socket

    def _drain(self, socket: zmq.Socket[bytes]) -> bool:
        """Move frames into ZeroMQ until none is left (True) or its queue is full (False)."""
        queue = self._queue
        lock = self._lock
        while queue:
            try:
                socket.send(queue[0], zmq.NOBLOCK)
            except zmq.Again:
                return False
            with lock:
                queue.popleft()
                self._taken += 1
        return True

    def _park(self) -> None:
        self._wake.clear()
        self._parked = True
        if not self._queue and not self._stopping:
            self._wake.wait(self._park_timeout_s)
        self._parked = False

    def _release(self) -> None:
        socket, context = self._socket, self._context
        try:
            if socket is not None:
                self._drain(socket)
                socket.close(linger=self._linger_ms)
            if context is not None:
                context.term()
        except zmq.ZMQError:
            logger.exception("error while closing the emitter socket")
        with self._lock:
            unsent = len(self._queue)
            self._taken += unsent
            self._queue.clear()
        if unsent:
            logger.warning("%d events were not handed to the forwarder before closing", unsent)
        self._drops.flush()
