"""Hand encoded frames to the forwarder from any thread without the caller ever waiting.

The caller only appends to a deque bounded by count and by bytes; a pump thread owns the ZeroMQ
socket and moves frames into it. The pump polls every millisecond while events flow and parks
after a quiet spell, so only the first event after a pause pays for waking it, and an idle process
spends no CPU here.

The pump is a real OS thread under every worker model. Under gunicorn's eventlet and gevent
workers `threading` is monkey-patched, so the model is detected at first use and the thread, its
locks and its sleeps come from the unpatched originals (`emitter._runtime`). The alternative, a
green pump on `zmq.green` / `eventlet.green.zmq`, was measured in those workers: the caller's cost
is the same (encode and append either way), but the green pump spends about 1-1.5 us of the hub's
own time per event moved (100,000 events: 105-155 ms of hub CPU against 10 ms with the real
thread), time every request in the worker waits for; one uncooperative wait in it (a pyzmq
`poll`, `Context.term()`) freezes the whole worker, and a caller on a real thread (a thread pool
inside an eventlet app) cannot safely wake it. The real thread shares nothing with the hub but a
deque and locks held for a few instructions, and is woken by releasing a lock, which never waits.

A green caller never waits on the pump: `close()` polls a flag with `time.sleep`, which under
patching switches to the hub. The pump spends the linger on the whole path: the deque into
ZeroMQ, ZeroMQ into the kernel (it terminates the context itself), and the kernel to the
forwarder (`emitter._connections`); what it gives up is counted as unsent, never as queued.

Memory is bounded by bytes along the whole path: an event larger than `max_event_bytes` is
refused, and the deque plus what ZeroMQ may still hold stay within `max_bytes`. ZeroMQ's own
queue cannot be measured, but it holds at most its high-water mark of the most recent frames, so
the sizes of the last frames handed to it are counted until newer ones push them out.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

import zmq

from emitter._connections import Connections, release, unread_bytes
from emitter._runtime import LockType, Model, Runtime, detect, real_lock
from emitter.config import CurveKeys, curve_options
from emitter.throttle import Throttle

__all__ = [
    "DEFAULT_LINGER_MS",
    "DEFAULT_MAX_EVENT_BYTES",
    "DEFAULT_QUEUE_MAX_BYTES",
    "DEFAULT_SNDHWM",
    "MIN_QUEUE_EVENTS_OF_MAX_SIZE",
    "DisabledTransport",
    "PushTransport",
    "ThrottledCounter",
    "Transport",
    "TransportStats",
    "describe_error",
    "zmq_hwm",
]

logger = logging.getLogger("emitter")

DEFAULT_MAX_EVENT_BYTES: Final = 256 << 10
DEFAULT_QUEUE_MAX_BYTES: Final = 64 << 20
DEFAULT_SNDHWM: Final = 10000
DEFAULT_LINGER_MS: Final = 500
MIN_QUEUE_EVENTS_OF_MAX_SIZE: Final = 8
"""`max_bytes` holds at least this many events of `max_event_bytes`: half for ZeroMQ, half here."""
POLL_S: Final = 0.001
"""Pump tick while events flow: the longest an event waits in the deque."""
PARK_AFTER_S: Final = 0.05
"""Quiet time after which the pump sleeps until a caller wakes it."""
PARK_TIMEOUT_S: Final = 1.0
"""Safety net: even a lost wake-up delays an event by at most this long."""
RETRY_MS: Final = 20
"""How long the pump waits for room while the forwarder is away or slow, before re-checking."""
RESTART_AFTER_S: Final = 1.0
"""After a pump stopped without sending anything, the wait before the next start: no spinning."""
CLOSE_POLL_S: Final = 0.002
CLOSE_GRACE_S: Final = 0.25
"""How long past the linger `close()` waits for a pump that the OS has not scheduled in time."""
ZMQ_IN_FLIGHT: Final = 2
"""Frames ZeroMQ may hold beyond its high-water mark: one being written, one between threads."""
WARN_INTERVAL_S: Final = 10.0


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


def describe_error(exc: BaseException) -> str:
    """`Type: message`, short, from any exception; a broken `__str__` cannot escape."""
    try:
        text = str(exc)
    except Exception:  # a broken __str__ must not escape a publish call
        text = ""
    return f"{type(exc).__name__}: {text}"[:200] if text else type(exc).__name__


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
        self._lock = real_lock()
        self._total = 0
        self._latest = ""
        self._throttle = Throttle(self._interval_s, self._clock)

    @property
    def total(self) -> int:
        """Occurrences since creation (or since the fork that created this process)."""
        return self._total

    def add(self, detail: str = "") -> None:
        """Count one occurrence; log if the last warning is older than the interval."""
        with self._lock:
            self._total += 1
            self._latest = detail
        held = self._throttle.ready()
        if held is not None:
            self._log(held + 1, detail)

    def flush(self) -> None:
        """Log what was counted since the last warning, so a final burst is never silent."""
        count = self._throttle.drain()
        with self._lock:
            detail = self._latest
        if count:
            self._log(count, detail)

    def _log(self, count: int, detail: str) -> None:
        latest = f" (latest: {detail})" if detail else ""
        logger.warning("%s: %d since the last warning%s", self._problem, count, latest)


@dataclass(frozen=True, slots=True)
class TransportStats:
    """Counters that add up: every frame offered was queued, dropped, too large or unsent.

    `unsent` are frames accepted but given up when the transport closed before the forwarder
    took them; they are no longer counted as queued.
    """

    queued: int
    dropped: int
    too_large: int = 0
    unsent: int = 0


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


def zmq_hwm(hwm: int, max_bytes: int, max_event_bytes: int) -> int:
    """ZeroMQ's own high-water mark: as many frames as fit in half the byte budget at most."""
    fitting = max_bytes // (2 * max_event_bytes) - ZMQ_IN_FLIGHT
    return max(1, min(hwm, fitting))


class PushTransport:
    """A ZeroMQ PUSH socket behind a bounded deque, fed by callers and drained by a pump thread."""

    def __init__(
        self,
        endpoint: str,
        *,
        hwm: int = DEFAULT_SNDHWM,
        max_bytes: int = DEFAULT_QUEUE_MAX_BYTES,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        linger_ms: int = DEFAULT_LINGER_MS,
        park_timeout_s: float = PARK_TIMEOUT_S,
        curve: CurveKeys | None = None,
    ) -> None:
        if max_bytes < MIN_QUEUE_EVENTS_OF_MAX_SIZE * max_event_bytes:
            raise ValueError(
                f"max_bytes ({max_bytes}) must hold {MIN_QUEUE_EVENTS_OF_MAX_SIZE} events of "
                f"max_event_bytes ({max_event_bytes})"
            )
        self.endpoint = endpoint
        self._curve = curve
        self._hwm = hwm
        self._max_bytes = max_bytes
        self._max_event_bytes = max_event_bytes
        self._zmq_hwm = zmq_hwm(hwm, max_bytes, max_event_bytes)
        self._linger_ms = linger_ms
        self._park_timeout_s = park_timeout_s
        self._closed = False
        self._too_large = ThrottledCounter(
            f"events refused: larger than the {max_event_bytes}-byte limit "
            "(EMITTER_MAX_EVENT_BYTES)"
        )
        self._closed_drops = ThrottledCounter("events dropped: the publisher is closed")
        self._reset_state()
        _fork_aware.add(self)
        _open_transports.add(self)

    def _reset_state(self) -> None:
        self._runtime: Runtime | None = None
        self._queue: deque[bytes] = deque()
        self._queued_bytes = 0
        self._sent_sizes: deque[int] = deque()
        self._sent_bytes = 0
        """Sizes of the last frames handed to ZeroMQ: an upper bound of what it still holds."""
        self._lock: LockType = real_lock()
        """Guards the deque's accounting; held for a few instructions only, on either side."""
        self._start_lock: LockType = real_lock()
        self._wake: LockType = real_lock()
        """Held while no wake-up is pending; a caller releases it to wake the parked pump."""
        self._wake.acquire()
        self._parked = True
        """True while the pump sleeps, or no pump runs: the next send wakes or starts one."""
        self._pump_running = False
        self._pump_ident: int | None = None
        self._next_start = float("-inf")
        self._closing = False
        self._deadline = 0.0
        self._finished = False
        self._zmq_cut_short = False
        self._failure = ""
        """Why the last pump stopped; logged by the caller that starts the next one."""
        self._context: zmq.Context[zmq.Socket[bytes]] | None = None
        self._socket: zmq.Socket[bytes] | None = None
        self._connections: Connections | None = None
        self._taken = 0
        self._unsent = 0
        self._full = ThrottledCounter(
            "events dropped: the queue for the forwarder is full; "
            "the forwarder is not taking events (is it running?)"
        )
        self._stopped = ThrottledCounter(
            "events dropped: the queue for the forwarder is full because the emitter's sending "
            "thread is not running"
        )
        self._pump_failures = ThrottledCounter(
            "the emitter's sending thread stopped (the next publish starts a new one)"
        )

    def _reset_after_fork(self) -> None:
        """A forked child starts empty and opens its own socket; the parent's stay untouched."""
        inherited = (self._socket, self._connections, self._context)
        _inherited.extend(obj for obj in inherited if obj is not None)
        self._reset_state()

    @property
    def parked(self) -> bool:
        """True while the pump sleeps (or was never started) until the next send wakes it."""
        return self._parked

    @property
    def model(self) -> Model | None:
        """How callers are scheduled (threads, eventlet or gevent), known once the pump started."""
        runtime = self._runtime
        return None if runtime is None else runtime.model

    @property
    def pump_ident(self) -> int | None:
        """The sending thread's ident while it runs, for diagnostics (faulthandler, debuggers)."""
        return self._pump_ident if self._pump_running else None

    def send(self, frame: bytes) -> bool:
        """Queue one frame for the forwarder; False (counted) when too large, full or closed."""
        size = len(frame)
        if size > self._max_event_bytes:
            self._too_large.add(f"{size} bytes")
            return False
        with self._lock:
            accepted = (
                not self._closed
                and len(self._queue) < self._hwm
                and self._queued_bytes + self._sent_bytes + size <= self._max_bytes
            )
            if accepted:
                self._queue.append(frame)
                self._queued_bytes += size
        if not accepted:
            self._refuse()
            return False
        if self._parked:
            self._unpark()
        return True

    def stats(self) -> TransportStats:
        """Exact counters: frames taken by the pump plus those still waiting are queued."""
        with self._lock:
            queued = self._taken + len(self._queue)
            unsent = self._unsent
        dropped = self._full.total + self._stopped.total + self._closed_drops.total
        return TransportStats(queued, dropped, self._too_large.total, unsent)

    def close(self) -> None:
        """Spend up to the linger handing everything over, then count and log what was not."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            work_left = bool(self._queue) or self._socket is not None or self._pump_running
        if work_left:
            self._deadline = time.monotonic() + self._linger_ms / 1000
            self._closing = True
            if self._pump_running:
                self._wake_pump()
            else:
                self._start_pump()
            self._wait_for_pump()
        self._report_close()

    def _refuse(self) -> None:
        if self._closed:
            self._closed_drops.add()
        elif self._pump_running or not self._failure:
            self._full.add()
        else:
            self._stopped.add(self._failure)

    def _unpark(self) -> None:
        if self._pump_running:
            self._wake_pump()
        elif time.monotonic() >= self._next_start:
            self._start_pump()

    def _wake_pump(self) -> None:
        with contextlib.suppress(RuntimeError):  # a wake-up is already pending
            self._wake.release()

    def _start_pump(self) -> None:
        with self._start_lock:
            if self._pump_running or (self._closed and not self._closing):
                return
            runtime = self._runtime = self._runtime or detect()
            failure, self._failure = self._failure, ""
            self._pump_running = True
            self._parked = False
            try:
                self._pump_ident = runtime.start_thread(self._run, "emitter-pump")
            except RuntimeError as exc:  # no thread can be started (interpreter shutting down)
                self._pump_running = False
                self._parked = True
                self._failure = describe_error(exc)
                self._next_start = time.monotonic() + RESTART_AFTER_S
        if failure:
            self._pump_failures.add(failure)

    def _run(self) -> None:
        """The pump: never logs or touches a green object, so it is safe under any patching."""
        runtime = self._runtime
        assert runtime is not None  # set before the thread starts
        taken_before = self._taken
        try:
            socket = self._socket if self._socket is not None else self._connect()
            if not self._closing:
                self._pump_loop(socket, runtime.sleep)
            self._hand_over(socket, runtime.sleep)
        except BaseException as exc:  # recorded; the caller that starts the next pump logs it
            self._failure = describe_error(exc)
            if isinstance(exc, zmq.ZMQError):
                self._discard_socket(self._linger_ms)
            if self._taken == taken_before:
                self._next_start = time.monotonic() + RESTART_AFTER_S
            if self._closing:
                self._give_up_queue()
                self._discard_socket(self._remaining_ms())
                self._terminate_context()
        finally:
            self._pump_running = False
            self._parked = True
            if self._closing:
                self._finished = True

    def _connect(self) -> zmq.Socket[bytes]:
        """The one place where the socket is created and its options are set."""
        context = self._context
        if context is None:
            context = self._context = zmq.Context()
        socket = context.socket(zmq.PUSH)
        self._socket = socket
        socket.setsockopt(zmq.SNDHWM, self._zmq_hwm)
        socket.setsockopt(zmq.LINGER, self._linger_ms)
        for option, value in ({} if self._curve is None else curve_options(self._curve)).items():
            socket.setsockopt(option, value)
        self._connections = Connections(socket)
        socket.connect(self.endpoint)
        return socket

    def _remaining_ms(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))

    def _discard_socket(self, linger_ms: int) -> None:
        """Close the socket and its monitor; the next pump, if any, opens a new one."""
        socket, self._socket = self._socket, None
        connections, self._connections = self._connections, None
        if connections is not None:
            connections.close()
        if socket is not None:
            socket.close(linger=linger_ms)

    def _terminate_context(self) -> None:
        context, self._context = self._context, None
        if context is not None:
            context.term()

    def _pump_loop(self, socket: zmq.Socket[bytes], sleep: Callable[[float], None]) -> None:
        queue = self._queue
        connections = self._connections
        assert connections is not None  # opened with the socket
        idle_until = time.monotonic() + PARK_AFTER_S
        while not self._closing:
            connections.update()
            if queue:
                if not self._drain(socket):
                    socket.poll(RETRY_MS, zmq.POLLOUT)
                idle_until = time.monotonic() + PARK_AFTER_S
            elif time.monotonic() < idle_until:
                sleep(POLL_S)
            else:
                self._park()

    def _park(self) -> None:
        self._parked = True
        self._wake.acquire(False)  # forget a wake-up meant for an earlier sleep
        if not self._queue and not self._closing:
            self._wake.acquire(True, self._park_timeout_s)
        self._parked = False

    def _drain(self, socket: zmq.Socket[bytes]) -> bool:
        """Move frames into ZeroMQ until none is left (True) or its queue is full (False)."""
        queue = self._queue
        lock = self._lock
        sent_sizes = self._sent_sizes
        remembered = self._zmq_hwm + ZMQ_IN_FLIGHT
        while queue:
            frame = queue[0]
            try:
                socket.send(frame, zmq.NOBLOCK)
            except zmq.Again:
                return False
            size = len(frame)
            with lock:
                if queue and queue[0] is frame:  # close() may have given the queue up meanwhile
                    queue.popleft()
                    self._queued_bytes -= size
                else:
                    self._unsent -= 1
                self._taken += 1
                sent_sizes.append(size)
                self._sent_bytes += size
                if len(sent_sizes) > remembered:
                    self._sent_bytes -= sent_sizes.popleft()
        return True

    def _hand_over(self, socket: zmq.Socket[bytes], sleep: Callable[[float], None]) -> None:
        """At close: drain the deque into ZeroMQ, ZeroMQ into the kernel, the kernel to the peer."""
        while self._queue and (remaining_ms := self._remaining_ms()) > 0:
            if not self._drain(socket):
                socket.poll(min(RETRY_MS, remaining_ms), zmq.POLLOUT)
        zmq_full = self._give_up_queue() > 0
        assert self._connections is not None  # opened with the socket
        held = self._connections.hold()
        linger_ms = self._remaining_ms()
        self._discard_socket(linger_ms)
        started = time.monotonic()
        self._terminate_context()
        timed_out = linger_ms > 0 and (time.monotonic() - started) * 1000 >= linger_ms
        while any(unread_bytes(fd) for fd in held) and self._remaining_ms() > 0:
            sleep(POLL_S)
        unread = any(unread_bytes(fd) for fd in held)
        release(held)
        self._zmq_cut_short = zmq_full or timed_out or unread

    def _give_up_queue(self) -> int:
        """Count what is still in the deque as unsent and empty it; how many that were."""
        with self._lock:
            count = len(self._queue)
            self._unsent += count
            self._queue.clear()
            self._queued_bytes = 0
        return count

    def _wait_for_pump(self) -> None:
        """Poll, never join: under eventlet or gevent `time.sleep` lets the hub run meanwhile."""
        give_up = self._deadline + CLOSE_GRACE_S
        while not self._finished and time.monotonic() < give_up:
            if not self._pump_running:  # it stopped before it saw the close: a fresh one closes
                self._start_pump()
            time.sleep(CLOSE_POLL_S)
        if not self._finished:
            self._give_up_queue()
            logger.error("the emitter's sending thread did not finish closing; its socket is open")

    def _report_close(self) -> None:
        if self._failure:
            self._pump_failures.add(self._failure)
        self._pump_failures.flush()
        if self._unsent:
            logger.warning(
                "events not handed to the forwarder within EMITTER_LINGER_MS=%d are lost: %d "
                "(counted as unsent)",
                self._linger_ms,
                self._unsent,
            )
        if self._zmq_cut_short:
            logger.warning(
                "the forwarder did not take every event ZeroMQ held within EMITTER_LINGER_MS=%d: "
                "up to %d more are lost",
                self._linger_ms,
                min(self._taken, self._zmq_hwm + ZMQ_IN_FLIGHT),
            )
        for counter in (self._full, self._stopped, self._closed_drops, self._too_large):
            counter.flush()
