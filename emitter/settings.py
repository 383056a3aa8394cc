"""The emitter's settings, read from the same environment file as the forwarder's: the one place
the emitter reads its environment.

`openalgo-forwarder check` reads the limits strictly (a bad value is a configuration error); the
trading process reads everything leniently (a bad value is logged and the default used, or
publishing switched off), since a publisher must never stop the app it lives in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from emitter.config import ConfigError, CurveKeys, curve_client_keys, env_int, resolve_endpoint
from emitter.transport import (
    DEFAULT_LINGER_MS,
    DEFAULT_MAX_EVENT_BYTES,
    DEFAULT_QUEUE_MAX_BYTES,
    DEFAULT_SNDHWM,
    MIN_QUEUE_EVENTS_OF_MAX_SIZE,
    zmq_hwm,
)

__all__ = ["MIN_EVENT_BYTES", "Connection", "EmitterSettings"]

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


@dataclass(frozen=True, slots=True)
class Connection:
    """Where the app's events go and with which CURVE keys; `disabled` says why none go at all."""

    endpoint: str = ""
    curve: CurveKeys | None = None
    disabled: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, report: Report) -> Connection:
        """Lenient: a bad endpoint or key switches publishing off, reported; a bad opt-in
        (FORWARDER_ALLOW_REMOTE, FORWARDER_ALLOW_INSECURE_TCP) is read as its default, 0."""
        try:
            curve = curve_client_keys(env)
        except ConfigError as exc:
            report(f"{exc}; event publishing is disabled")
            return cls(disabled=f"invalid {exc.variable}")
        while True:
            try:
                return cls(resolve_endpoint(env, curve=curve is not None), curve)
            except ConfigError as exc:
                if exc.variable not in ("FORWARDER_ALLOW_REMOTE", "FORWARDER_ALLOW_INSECURE_TCP"):
                    report(f"{exc}; event publishing is disabled")
                    return cls(disabled="invalid FORWARDER_ENDPOINT")
                report(f"{exc}; using the default 0")
                env = {**env, exc.variable: "0"}


def _size(count: int) -> str:
    for unit, shift in (("MiB", 20), ("KiB", 10)):
        if count >= 1 << shift and count % (1 << shift) == 0:
            return f"{count >> shift:,} {unit}"
    return f"{count:,} bytes"
