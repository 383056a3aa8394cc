"""Send the events OpenAlgo emits straight to Socket.IO through the forwarder too, in one call.

OpenAlgo's broker modules emit `master_contract_download` with `socketio.emit(...)` on the
`SocketIO` object they imported from `extensions` long before start-up code runs. Calling
`forward_direct_emits(socketio)` once after `socketio.init_app(app)` sets `emit` on that very
object, so every module holding it goes through the wrapper from then on, without any edit.

The wrapper touches only FORWARDED_EVENTS broadcast to the browsers' namespace. When the
forwarder delivers to browsers (ORDER_EVENT_MODE includes SOCKETIO), such an event is published
for Kafka and the browser and not emitted here; should the publisher drop it (the forwarder
gone for long enough that its queue filled), it is emitted here instead, so the browser still
gets it, once. Otherwise it is emitted here and published for Kafka only. Every other event,
`force_logout` included, goes straight to the original `emit`: none of them waits on, or
depends on, the forwarder. The relay re-emits through the original `emit` (`original_emit`),
so nothing it relays comes back through here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Final

from emitter.openalgo import browser_via_forwarder, without_api_keys
from emitter.publisher import get_event_publisher
from emitter.transport import ThrottledCounter

__all__ = ["FORWARDED_EVENTS", "ForwardingEmit", "forward_direct_emits", "original_emit"]

FORWARDED_EVENTS: Final = frozenset({"master_contract_download", "password_change"})
"""The seed's events OpenAlgo emits directly and its bus subscriber never emits, so no event
reaches Kafka twice whichever subscriber shows the browsers bus events."""

_BROADCAST: Final[Mapping[str, object]] = {
    "namespace": "/",
    "to": None,
    "room": None,
    "skip_sid": None,
    "callback": None,
    "include_self": True,
}
"""Keyword arguments of `SocketIO.emit` and the values that still mean "every browser on /"."""

logger = logging.getLogger("emitter")
_failures: Final = ThrottledCounter("directly emitted events not forwarded")

Emit = Callable[..., Any]


class ForwardingEmit:
    """`SocketIO.emit` with FORWARDED_EVENTS also published; `original` is the emit it wraps."""

    def __init__(self, original: Emit, browser_via_forwarder: bool) -> None:
        self.original = original
        self.browser_via_forwarder = browser_via_forwarder

    def __call__(self, event: Any, *args: Any, **kwargs: Any) -> Any:
        """Emit as Socket.IO would, publishing the forwarded events once on the way."""
        if type(event) is not str or event not in FORWARDED_EVENTS:
            return self.original(event, *args, **kwargs)
        payload = args[0] if len(args) == 1 and isinstance(args[0], dict) else None
        if payload is None:
            return self.original(event, *args, **kwargs)
        if self.browser_via_forwarder and _is_broadcast(kwargs):
            if _publish(event, payload, browser=True):
                return None
        else:
            _publish(event, payload, browser=False)
        return self.original(event, *args, **kwargs)


def _is_broadcast(kwargs: Mapping[str, object]) -> bool:
    """Whether the call reaches every browser on `/`, as the relay's re-emit would."""
    for name, value in kwargs.items():
        if name not in _BROADCAST or (value is not None and value != _BROADCAST[name]):
            return False
    return True


def _publish(event: str, payload: dict[str, Any], *, browser: bool) -> bool:
    """Queue the event for the forwarder; never raising into the emitting code."""
    try:
        user = payload.get("user")
        return get_event_publisher().emit(
            event,
            without_api_keys(payload),
            user_id=user if isinstance(user, str) and user else None,
            browser=browser,
        )
    except Exception as exc:  # the app's own emit must go on whatever happened here
        _failures.add(f"{type(exc).__name__} on {event}")
        return False


def forward_direct_emits(socketio: Any, env: Mapping[str, str] | None = None) -> ForwardingEmit:
    """Wrap this Socket.IO server's `emit` (once: a second call returns the first wrapper).

    `env` (default: the process environment) gives ORDER_EVENT_MODE, read once, here.
    """
    current = socketio.emit
    if isinstance(current, ForwardingEmit):
        return current
    wrapper = ForwardingEmit(current, browser_via_forwarder(env))
    socketio.emit = wrapper
    logger.info(
        "directly emitted %s now reach the forwarder (browser through it: %s)",
        ", ".join(sorted(FORWARDED_EVENTS)),
        wrapper.browser_via_forwarder,
    )
    return wrapper


def original_emit(socketio: Any) -> Emit:
    """The server's `emit` without the wrapper: what the relay re-emits with, so nothing loops."""
    emit = socketio.emit
    return emit.original if isinstance(emit, ForwardingEmit) else emit
