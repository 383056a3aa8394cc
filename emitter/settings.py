"""The emitter's limits, read from the same environment file as the forwarder's settings.

`openalgo-forwarder check` reads them strictly (a bad value is a configuration error); the trading
process reads them leniently (a bad value is logged and the default used), since a publisher must
never stop the app it lives in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from emitter.config import ConfigError, env_int
from emitter.transport import (
    DEFAULT_LINGER_MS,
    DEFAULT_MAX_EVENT_BYTES,
    DEFAULT_QUEUE_MAX_BYTES,
    DEFAULT_SNDHWM,
    MIN_QUEUE_EVENTS_OF_MAX_SIZE,
    zmq_hwm,
)

__all__ = ["MIN_EVENT_BYTES", "EmitterSettings"]

MIN_EVENT_BYTES: Final = 1024
"""An ordinary order event encodes to about 200 bytes; below this limit even those are at risk."""

Report = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class EmitterSettings:
    """Bounds of what the trading process holds for the forwarder, and how long exit waits."""

    sndhwm: int = DEFAULT_SNDHWM
    linger_ms: int = DEFAULT_LINGER_MS
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    queue_max_bytes: int = DEFAULT_QUEUE_MAX_BYTES

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, report: Report | None = None) -> EmitterSettings:
        """Strict without `report` (raises ConfigError); with it, each bad value is reported."""

        def number(name: str, default: int, minimum: int) -> int:
            try:
                return env_int(env, name, default, minimum=minimum)
            except ConfigError as exc:
                if report is None:
                    raise
                report(f"{exc}; using the default {default}")
                return default

        queue_max_bytes = number("EMITTER_QUEUE_MAX_BYTES", DEFAULT_QUEUE_MAX_BYTES, 1)
        max_event_bytes = number(
            "EMITTER_MAX_EVENT_BYTES", DEFAULT_MAX_EVENT_BYTES, MIN_EVENT_BYTES
        )
        needed = MIN_QUEUE_EVENTS_OF_MAX_SIZE * max_event_bytes
        if queue_max_bytes < needed:
            exc = ConfigError(
                "EMITTER_QUEUE_MAX_BYTES",
                env.get("EMITTER_QUEUE_MAX_BYTES", str(queue_max_bytes)),
                f"at least {MIN_QUEUE_EVENTS_OF_MAX_SIZE} x EMITTER_MAX_EVENT_BYTES ({needed})",
            )
            if report is None:
                raise exc
            max_event_bytes = max(MIN_EVENT_BYTES, queue_max_bytes // MIN_QUEUE_EVENTS_OF_MAX_SIZE)
            queue_max_bytes = max(queue_max_bytes, MIN_QUEUE_EVENTS_OF_MAX_SIZE * max_event_bytes)
            report(
                f"{exc}; using EMITTER_MAX_EVENT_BYTES={max_event_bytes} "
                f"and EMITTER_QUEUE_MAX_BYTES={queue_max_bytes}"
            )
        return cls(
            sndhwm=number("EMITTER_SNDHWM", DEFAULT_SNDHWM, 1),
            linger_ms=number("EMITTER_LINGER_MS", DEFAULT_LINGER_MS, 0),
            max_event_bytes=max_event_bytes,
            queue_max_bytes=queue_max_bytes,
        )

    def describe(self) -> str:
        """One line for `check`: what the app holds while the forwarder is away, and how long."""
        zmq_events = zmq_hwm(self.sndhwm, self.queue_max_bytes, self.max_event_bytes)
        return (
            f"holds up to {self.sndhwm:,} events (+{zmq_events:,} in ZeroMQ) or "
            f"{_size(self.queue_max_bytes)}; refuses events over {_size(self.max_event_bytes)}; "
            f"exit waits up to {self.linger_ms} ms"
        )


def _size(count: int) -> str:
    for unit, shift in (("MiB", 20), ("KiB", 10)):
        if count >= 1 << shift and count % (1 << shift) == 0:
            return f"{count >> shift:,} {unit}"
    return f"{count:,} bytes"
