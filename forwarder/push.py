"""Frames handed to a running forwarder as an emitter would, but blocking: for `dead-letters
replay`, tools and tests, never for the trading process (the emitter's transport never blocks)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import zmq

from emitter.config import CurveKeys, curve_options

__all__ = ["push_frames", "pusher"]


@contextmanager
def pusher(
    endpoint: str,
    *,
    curve: CurveKeys | None = None,
    linger_ms: int = 5000,
    send_timeout_ms: int = -1,
    hwm: int = 1000,
) -> Iterator[zmq.Socket[bytes]]:
    """A PUSH socket connected to `endpoint`; on exit it lingers up to `linger_ms` for ZeroMQ to
    hand over what it still holds. A send waits up to `send_timeout_ms` (-1: without limit) while
    `hwm` frames are queued (0: no limit)."""
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, linger_ms)
    push.setsockopt(zmq.SNDTIMEO, send_timeout_ms)
    push.setsockopt(zmq.SNDHWM, hwm)
    if curve is not None:
        for option, value in curve_options(curve).items():
            push.setsockopt(option, value)
    try:
        push.connect(endpoint)
        yield push
    finally:
        push.close()
        context.term()


def push_frames(
    endpoint: str,
    frames: Iterable[bytes],
    *,
    curve: CurveKeys | None = None,
    linger_ms: int = 5000,
    send_timeout_ms: int = -1,
) -> int:
    """Send the frames in order; how many ZeroMQ took before a send timed out (all, normally)."""
    sent = 0
    with pusher(
        endpoint, curve=curve, linger_ms=linger_ms, send_timeout_ms=send_timeout_ms
    ) as push:
        for frame in frames:
            try:
                push.send(frame)
            except zmq.Again:
                break
            sent += 1
    return sent
