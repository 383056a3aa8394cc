"""Helpers for tests of code that publishes events: no socket, no forwarder, no singleton.

publisher = EventPublisher(MemoryTransport())
register(bus, publisher=publisher)
...
assert [e.event for e in publisher.transport.envelopes()] == ["order_event"]
"""

from __future__ import annotations

import threading
from typing import Any

from emitter.contract import SCHEMA_VERSION, SYSTEM_KEY, Envelope, decode_envelope
from emitter.transport import TransportStats

__all__ = ["MemoryTransport", "envelope"]


def envelope(
    event: str = "order_event",
    data: dict[str, Any] | None = None,
    *,
    id: str = "0" * 32,
    ts: int = 1,
    topic: str | None = None,
    user_id: str | None = None,
    key: str | None = None,
    browser: bool = True,
    extra: dict[str, Any] | None = None,
) -> Envelope:
    """An envelope of the current schema; every field has a plain default, the key follows the
    user as the publisher sets it."""
    return Envelope(
        SCHEMA_VERSION,
        id,
        ts,
        event,
        topic,
        user_id,
        key or user_id or SYSTEM_KEY,
        {} if data is None else data,
        browser,
        extra,
    )


class MemoryTransport:
    """A transport that keeps every frame in memory, in order; `limit` frames at most, then it
    drops (counted) as the real one does when full."""

    def __init__(self, limit: int | None = None) -> None:
        self.frames: list[bytes] = []
        self._limit = limit
        self._dropped = 0
        self._lock = threading.Lock()

    def send(self, frame: bytes) -> bool:
        """Keep the frame; False once `limit` frames are held."""
        with self._lock:
            if self._limit is not None and len(self.frames) >= self._limit:
                self._dropped += 1
                return False
            self.frames.append(frame)
            return True

    def stats(self) -> TransportStats:
        with self._lock:
            return TransportStats(queued=len(self.frames), dropped=self._dropped)

    def close(self) -> None:
        """Nothing to release: the frames stay readable."""

    def envelopes(self) -> list[Envelope]:
        """The frames decoded, strictly, as the forwarder decodes them."""
        with self._lock:
            frames = list(self.frames)
        return [decode_envelope(frame) for frame in frames]
