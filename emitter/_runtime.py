"""Real OS threads, locks and sleeps, whatever eventlet or gevent did to `threading` and `time`.

Under `eventlet.monkey_patch()` or gevent's `patch_all()` (gunicorn's eventlet and gevent
workers), `threading.Thread` starts a green thread, `threading.Lock` is a green lock and
`time.sleep` switches to the hub. The emitter's sending thread must be none of these: it waits in
C (ZeroMQ, `Context.term()`), which would stop every green thread. Both libraries keep the
originals; this module hands them out, so the same sending code runs under every model.
"""

from __future__ import annotations

import _thread
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

__all__ = ["Runtime", "detect", "real_lock"]

Model = Literal["threads", "eventlet", "gevent"]
LockType = _thread.LockType
_NO_ARGS: Final[tuple[()]] = ()


@dataclass(frozen=True, slots=True)
class Runtime:
    """How this process schedules its callers, and the unpatched primitives for a real thread."""

    model: Model
    start_thread: Callable[[Callable[[], None], str], int]
    """Start a daemon OS thread running the callable; returns its ident."""
    allocate_lock: Callable[[], LockType]
    sleep: Callable[[float], None]
    """Blocks only the calling OS thread, never a hub."""


def _start_threading(target: Callable[[], None], name: str) -> int:
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    assert thread.ident is not None  # set by start()
    return thread.ident


def _originals(
    model: Model,
    start_new_thread: Callable[..., int],
    allocate_lock: Callable[[], LockType],
    sleep: Callable[[float], None],
) -> Runtime:
    """A runtime from the unpatched `_thread` functions a patching library kept."""

    def start(target: Callable[[], None], name: str) -> int:
        return int(start_new_thread(target, _NO_ARGS))

    return Runtime(model, start, allocate_lock, sleep)


def _eventlet() -> Runtime | None:
    if "eventlet" not in sys.modules:
        return None
    from eventlet import patcher  # noqa: PLC0415 - only when the process already imported it

    if not patcher.is_monkey_patched("thread"):
        return None
    thread = patcher.original("_thread")
    sleep = patcher.original("time").sleep
    return _originals("eventlet", thread.start_new_thread, thread.allocate_lock, sleep)


def _gevent() -> Runtime | None:
    if "gevent" not in sys.modules:
        return None
    from gevent import monkey  # noqa: PLC0415 - only when the process already imported it

    if not monkey.is_module_patched("threading"):
        return None
    start, allocate = monkey.get_original("_thread", ["start_new_thread", "allocate_lock"])
    return _originals("gevent", start, allocate, monkey.get_original("time", "sleep"))


def detect() -> Runtime:
    """The process's model as it is now: call at first use, after any monkey-patching happened."""
    return (
        _eventlet()
        or _gevent()
        or Runtime("threads", _start_threading, _thread.allocate_lock, time.sleep)
    )


def real_lock() -> LockType:
    """A lock that blocks an OS thread: safe to share between green callers and a real thread.

    Held only for a few bytecodes, never across anything that could switch green threads, so a
    green caller never waits on it for longer than the other side's few instructions.
    """
    return detect().allocate_lock()
