"""The API the trading process calls: one method per OpenAlgo event, each a non-blocking call."""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from emitter.contract import SCHEMA_VERSION, SYSTEM_KEY, Envelope, encode_envelope
from emitter.settings import Connection, EmitterSettings
from emitter.transport import (
    DisabledTransport,
    PushTransport,
    ThrottledCounter,
    Transport,
    describe_error,
)

__all__ = [
    "EventPublisher",
    "EventPublisherFactory",
    "PublisherStats",
    "encode_event",
    "get_event_publisher",
    "publisher_from_env",
]

logger = logging.getLogger("emitter")


class _EventIds:
    """A random per-process base plus a counter: unique across processes, cheaper than uuid4.

    An id is `(base + next(counter))` as 32 lowercase hex characters: the random half, then the
    count. `_encode` computes it inline; a function call would cost more than the id itself.
    """

    __slots__ = ("base", "counter")

    def __init__(self) -> None:
        self.counter = itertools.count()
        self.renew()

    def renew(self) -> None:
        """A new random base: a forked child must not repeat its parent's ids."""
        self.base = int.from_bytes(os.urandom(8), "big") << 64


_ids: Final = _EventIds()
os.register_at_fork(after_in_child=_ids.renew)


@dataclass(frozen=True, slots=True)
class PublisherStats:
    """What became of every publish call: the five counts add up to the number of calls.

    `queued` were handed to the forwarder or are waiting to be; `dropped` found the queue full
    (or the publisher closed); `too_large` exceeded EMITTER_MAX_EVENT_BYTES; `unsent` were queued
    but given up when the publisher closed before the forwarder took them.
    """

    queued: int
    dropped: int
    too_large: int
    unsent: int
    failed_to_encode: int


_time_ns: Final = time.time_ns


def _problem(  # noqa: PLR0917 - mirrors `_encode`'s positional arguments
    event: object, data: object, key: object, topic: object, browser: object, extra: object
) -> str:
    """Why `emit` cannot send these arguments, or "" when they are fine."""
    if type(event) is not str or not event:
        return f"event must be a non-empty string, not {type(event).__name__}"
    for name, payload in (("data", data), ("extra", {} if extra is None else extra)):
        if not isinstance(payload, dict):
            return f"{name} must be a dict, not {type(payload).__name__}"
        if not all(type(field) is str for field in payload):
            return f"{name} must have string keys only"
    for name, value in (("key", key), ("topic", topic)):
        if value is not None and type(value) is not str:
            return f"{name} must be a string or None, not {type(value).__name__}"
    if type(browser) is not bool:
        return f"browser must be a bool, not {type(browser).__name__}"
    return ""


def _user_text(user_id: object) -> str:
    if type(user_id) is int:
        return str(user_id)
    raise TypeError(f"user_id must be a string or None, not {type(user_id).__name__}")


def _encode(  # noqa: PLR0917 - the hot path passes positionally: keywords cost time
    event: str,
    data: dict[str, Any],
    user_id: str | None,
    key: str | None,
    topic: str | None,
    browser: bool,
    extra: dict[str, Any] | None = None,
) -> bytes:
    """The hot path: arguments other than `data` and `user_id` were checked or are literals.

    Encoding is the snapshot: later changes to the caller's dict cannot alter the event.
    msgpack carries what JSON cannot (datetime, bytes, sets, dataclasses); the forwarder's sinks
    turn those into JSON with msgspec, so a second conversion pass here would only cost time.
    """
    if user_id is not None and type(user_id) is not str:
        user_id = _user_text(user_id)
    return encode_envelope(
        Envelope(
            SCHEMA_VERSION,
            (_ids.base + next(_ids.counter)).to_bytes(16, "big").hex(),
            _time_ns(),
            event,
            topic,
            user_id,
            key or user_id or SYSTEM_KEY,
            data,
            browser,
            extra,
        )
    )


def encode_event(
    event: str,
    data: dict[str, Any],
    *,
    user_id: str | None = None,
    key: str | None = None,
    topic: str | None = None,
    browser: bool = True,
    extra: dict[str, Any] | None = None,
) -> bytes:
    """Check the arguments and encode the envelope; raises TypeError, OverflowError, EncodeError."""
    problem = _problem(event, data, key, topic, browser, extra)
    if problem:
        raise TypeError(problem)
    return _encode(event, data, user_id, key, topic, browser, extra)


class EventPublisher:
    """Publishes OpenAlgo's events: each method returns at once, True when queued; none raises."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport
        self._send = transport.send
        self._failures = ThrottledCounter("events not published: they could not be encoded")

    def emit(
        self,
        event: str,
        data: dict[str, Any],
        *,
        user_id: str | None = None,
        key: str | None = None,
        topic: str | None = None,
        browser: bool = True,
        extra: dict[str, Any] | None = None,
    ) -> bool:
        """Publish any event: the Socket.IO name, its payload, who it belongs to, and the
        fields only Kafka records (`extra`)."""
        try:
            frame = encode_event(
                event, data, user_id=user_id, key=key, topic=topic, browser=browser, extra=extra
            )
        except Exception as exc:  # whatever the caller passed, the request goes on
            return self._refuse(exc)
        return self._send(frame)

    @property
    def transport(self) -> Transport:
        """Where the frames go: its own counters and, for the ZeroMQ transport, the worker model."""
        return self._transport

    def _publish(self, event: str, data: dict[str, Any], user_id: str | None) -> bool:
        """The seed methods' path: their event name and dict need no checking."""
        try:
            frame = _encode(event, data, user_id, None, None, True)
        except Exception as exc:  # whatever the caller passed, the request goes on
            return self._refuse(exc)
        return self._send(frame)

    def _refuse(self, exc: Exception) -> bool:
        self._failures.add(describe_error(exc))
        return False

    def publish_order_event(
        self, user_id: str | None, symbol: Any, action: Any, orderid: Any, mode: Any, **kwargs: Any
    ) -> bool:
        """An order was placed: `order_event` for the order book and the toast."""
        data = {"symbol": symbol, "action": action, "orderid": orderid, "mode": mode, **kwargs}
        return self._publish("order_event", data, user_id)

    def publish_analyzer_update(self, user_id: str | None, request: Any, response: Any) -> bool:
        """Analyze (sandbox) mode activity: `analyzer_update` refreshes the analyzer views."""
        data = {"request": request, "response": response}
        return self._publish("analyzer_update", data, user_id)

    def publish_order_notification(
        self, user_id: str | None, symbol: Any, status: Any, message: Any, **kwargs: Any
    ) -> bool:
        """A notice about an order (no action needed, a warning): `order_notification`."""
        data = {"symbol": symbol, "status": status, "message": message, **kwargs}
        return self._publish("order_notification", data, user_id)

    def publish_master_contract_download(
        self, broker: Any, status: Any, message: Any, **kwargs: Any
    ) -> bool:
        """A system event with no user: keyed `admin` so Kafka keeps these in one partition."""
        data = {"broker": broker, "status": status, "message": message, **kwargs}
        return self._publish("master_contract_download", data, None)

    def publish_password_change(
        self, user_id: str | None, status: Any, message: Any, **kwargs: Any
    ) -> bool:
        """A security event: `password_change`, naming the user in the payload as OpenAlgo does."""
        data = {"user": user_id, "status": status, "message": message, **kwargs}
        return self._publish("password_change", data, user_id)

    def stats(self) -> PublisherStats:
        """What became of every call so far: see `PublisherStats`."""
        transport = self._transport.stats()
        return PublisherStats(
            queued=transport.queued,
            dropped=transport.dropped,
            too_large=transport.too_large,
            unsent=transport.unsent,
            failed_to_encode=self._failures.total,
        )

    def close(self) -> None:
        """Hand over what is queued within the linger time; later publishes return False."""
        self._transport.close()
        self._failures.flush()


def publisher_from_env(env: Mapping[str, str]) -> EventPublisher:
    """A publisher configured from the environment; a bad setting is logged, never raised."""
    settings = EmitterSettings.from_env(env, report=logger.error)
    connection = Connection.from_env(env, report=logger.error)
    if connection.disabled is not None:
        return EventPublisher(DisabledTransport(connection.disabled))
    transport = PushTransport(
        connection.endpoint,
        hwm=settings.sndhwm,
        max_bytes=settings.queue_max_bytes,
        max_event_bytes=settings.max_event_bytes,
        linger_ms=settings.linger_ms,
        curve=connection.curve,
    )
    return EventPublisher(transport)


class EventPublisherFactory:
    """The process-wide publisher, built on first use from the environment."""

    _instance: ClassVar[EventPublisher | None] = None
    _lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def get_publisher(cls) -> EventPublisher:
        """The shared publisher; created once, safely from any thread."""
        instance = cls._instance
        if instance is None:
            with cls._lock:
                instance = cls._instance
                if instance is None:
                    instance = cls._instance = publisher_from_env(os.environ)
        return instance

    @classmethod
    def reset(cls) -> None:
        """Close the shared publisher so the next call reads the environment again (tests)."""
        with cls._lock:
            instance, cls._instance = cls._instance, None
        if instance is not None:
            instance.close()

    @classmethod
    def _after_fork_in_child(cls) -> None:
        cls._lock = threading.Lock()


os.register_at_fork(after_in_child=EventPublisherFactory._after_fork_in_child)


def get_event_publisher() -> EventPublisher:
    """The shared publisher, as the seed's callers obtain it."""
    return EventPublisherFactory.get_publisher()
