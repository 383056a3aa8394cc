"""Every shape that crosses a process boundary: the envelope (app to forwarder, one msgpack frame
each), the relay item (forwarder to the app's Socket.IO relay) and the timestamps Kafka carries.

The envelope's version can grow: a new version appends fields with defaults (the envelope is
positional), so a frame of every earlier version, such as a disk buffer still holds after an
upgrade, decodes unchanged; SCHEMA_VERSION goes up by one, and a test keeps a frame of each.
"""

from __future__ import annotations

import functools
import time
from typing import Annotated, Any, Final

import msgspec

__all__ = [
    "FIRST_SCHEMA_VERSION",
    "RELAY_BATCH_EVENT",
    "RELAY_LIMITS_EVENT",
    "RELAY_MIN_SECRET_LENGTH",
    "RELAY_NAMESPACE",
    "RELAY_REFUSED_MESSAGE",
    "RELAY_RESERVED_EVENTS",
    "SCHEMA_VERSION",
    "SYSTEM_KEY",
    "Envelope",
    "InvalidEnvelope",
    "RelayItem",
    "decode_envelope",
    "encode_envelope",
    "frame_event_id",
    "read_relay_item",
    "relay_item",
    "utc_timestamp",
]

FIRST_SCHEMA_VERSION: Final = 1
SCHEMA_VERSION: Final = 1
"""What this emitter writes and the newest this forwarder reads; it reads every one since the
first. A frame of a newer version is refused, its id kept for tracing (`frame_event_id`)."""
SYSTEM_KEY: Final = "admin"
"""Partition key of events that belong to no user (the seed keyed them so)."""

RELAY_NAMESPACE: Final = "/openalgo-forwarder"
"""The Socket.IO namespace the relay listens on and the forwarder connects to, by default."""
RELAY_BATCH_EVENT: Final = "relay_batch"
"""Carries a list of relay items; answered with the count emitted."""
RELAY_LIMITS_EVENT: Final = "relay_limits"
"""Answered with `{"max_bytes": n}`: the largest message the server accepts (None if unknown)."""
RELAY_REFUSED_MESSAGE: Final = "relay secret refused"
"""What a refused client is told, so it can tell a wrong secret from an unreachable server."""
RELAY_MIN_SECRET_LENGTH: Final = 16
RELAY_RESERVED_EVENTS: Final = frozenset(
    {"connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener"}
)
"""Names Socket.IO clients give a meaning of their own: relaying one would confuse browsers."""


_NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]


class Envelope(msgspec.Struct, frozen=True, array_like=True, forbid_unknown_fields=True, gc=False):
    """One event as it crosses the process boundary; positional on the wire to stay small.

    Untracked by the garbage collector (gc=False): a frozen value cannot take part in a cycle,
    and tracking each of the many thousands the forwarder holds made its collections dominate.
    """

    v: Annotated[int, msgspec.Meta(ge=FIRST_SCHEMA_VERSION, le=SCHEMA_VERSION)]
    id: _NonEmpty
    """Unique per event: how sinks and consumers recognise a duplicate."""
    ts: Annotated[int, msgspec.Meta(gt=0)]
    """Emit time, integer nanoseconds since the Unix epoch."""
    event: _NonEmpty
    """Socket.IO event name (`order_event`, ...); for events no browser sees, the topic."""
    topic: str | None
    """OpenAlgo event-bus topic (`order.placed`, ...) when the event came from the bus."""
    user_id: str | None
    key: _NonEmpty
    """Kafka partition key: the user id, or `admin` for system events."""
    data: dict[str, Any]
    """The payload exactly as the browser receives it: JSON-compatible values only."""
    browser: bool = True
    """False for events the forwarder must not relay to the browser: live failures, which the
    browser never received, and events the app already emitted to it itself."""
    extra: dict[str, Any] | None = None
    """The event's fields the browser payload leaves out, for Kafka only: Kafka's `data` is
    `data` followed by these; on a name clash `data`'s value is the one kept.

    Added last with a default, so frames of the earlier nine-field layout, such as those a disk
    buffer still holds, decode unchanged (with no extra fields)."""


class InvalidEnvelope(ValueError):  # noqa: N818 - reads as a statement about the frame
    """A frame that is not a valid envelope; `reason` says why, for the dead-letter record."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_encoder: Final = msgspec.msgpack.Encoder()
_decoder: Final = msgspec.msgpack.Decoder(Envelope)


def encode_envelope(envelope: Envelope) -> bytes:
    """Encode for the wire; raises msgspec.EncodeError or TypeError on unserialisable data."""
    return _encoder.encode(envelope)


def decode_envelope(frame: bytes) -> Envelope:
    """Decode one frame strictly, so a bad producer can never inject a half-valid event."""
    try:
        return _decoder.decode(frame)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise InvalidEnvelope(str(exc)) from exc
    except (RecursionError, MemoryError, ValueError, TypeError, OverflowError) as exc:
        raise InvalidEnvelope(f"undecodable frame: {type(exc).__name__}: {exc}") from exc


def frame_event_id(frame: bytes) -> str | None:
    """The id of a frame that is still a msgpack array (say, a newer schema), to trace it back."""
    try:
        fields = msgspec.msgpack.decode(frame)
    except (msgspec.DecodeError, RecursionError, MemoryError, ValueError, TypeError, OverflowError):
        return None
    if isinstance(fields, list) and len(fields) > 1 and isinstance(fields[1], str):
        return fields[1]
    return None


class RelayItem(msgspec.Struct, frozen=True, array_like=True, forbid_unknown_fields=True):
    """One event for the browsers, `[event, payload, user_id]` on the wire: built and checked by
    the forwarder, checked again by the relay before it emits."""

    event: _NonEmpty
    payload: dict[str, Any]
    """JSON values only: what the browser receives."""
    user_id: str | None

    def __post_init__(self) -> None:
        if self.event in RELAY_RESERVED_EVENTS:
            raise ValueError(f"{self.event} is reserved by Socket.IO")


def relay_item(event: str, payload: object, user_id: str | None) -> list[Any]:
    """The item as Socket.IO sends it (JSON values); raises ValueError naming what is wrong."""
    try:
        item = msgspec.convert([event, msgspec.to_builtins(payload), user_id], RelayItem)
    except TypeError as exc:
        raise ValueError(f"{event} payload is not JSON: {exc}") from exc
    except msgspec.ValidationError as exc:
        raise ValueError(str(exc)) from exc
    return [item.event, item.payload, item.user_id]


def read_relay_item(raw: object) -> RelayItem | None:
    """A received item, or None when it is not one (a relay skips it, counted)."""
    try:
        return msgspec.convert(raw, RelayItem)
    except msgspec.ValidationError:
        return None


def utc_timestamp(ns: int) -> str:
    """ISO-8601 UTC with microseconds and Z, as the seed wrote Kafka timestamps; the dead-letter
    file uses it too. Hot, so the second is cached."""
    seconds, rest = divmod(ns, 1_000_000_000)
    return f"{_second(seconds)}.{rest // 1000:06d}Z"


@functools.lru_cache(maxsize=64)
def _second(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
