"""Let the forwarder reach the browsers through the app's own Socket.IO server, and only it.

The forwarder runs outside the trading process, so it cannot emit to the browsers' sockets
itself. `install_relay` adds a namespace to the app's Socket.IO server (Flask-SocketIO or a
plain python-socketio `Server`) that accepts only clients presenting the shared secret and
re-emits each relayed event to the browsers under its original name and payload.

Acknowledgement: the `relay_batch` event's answer is the number of items emitted. A
well-formed batch (all the forwarder ever sends) is emitted whole and in order, so a count
`n` means its first `n` items reached the browsers' sockets. Malformed items are skipped,
counted and logged, never raised: one bad item must not take the app's server down.

A batch whose acknowledgement was lost is sent again by the forwarder, so browsers can see
the same event twice, with the same payload (event ids are not part of browser payloads).

Size: the server refuses, and drops the connection of, any message over its
`max_http_buffer_size` (1,000,000 bytes by default). Once connected, the forwarder asks
(`relay_limits`) and keeps each call under it.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from typing import Any

import socketio

from emitter.contract import (
    RELAY_BATCH_EVENT,
    RELAY_LIMITS_EVENT,
    RELAY_MIN_SECRET_LENGTH,
    RELAY_NAMESPACE,
    RELAY_REFUSED_MESSAGE,
    read_relay_item,
)
from emitter.direct_emits import original_emit

__all__ = ["install_relay"]

logger = logging.getLogger(__name__)

Emit = Callable[..., Any]


class _Relay:
    """The checks and the re-emitting, shared by the two server flavours' thin handlers."""

    def __init__(
        self, server: Any, secret: str, browser_namespace: str, per_user_rooms: bool
    ) -> None:
        self._server = server
        self._emit: Emit = original_emit(server)
        self._secret = secret.encode("utf-8", "surrogatepass")
        self._browser_namespace = browser_namespace
        self._per_user_rooms = per_user_rooms

    def admit(self, sid: object, remote: object, auth: object) -> bool:
        """Accept a client only with the secret; compare in constant time, log who, never what."""
        presented = auth.get("secret") if isinstance(auth, dict) else None
        if isinstance(presented, str) and hmac.compare_digest(
            presented.encode("utf-8", "surrogatepass"), self._secret
        ):
            logger.info("relay client %s connected from %s", sid, remote)
            return True
        reason = "no secret presented" if presented is None else "wrong secret"
        logger.warning("relay connection refused (%s): client %s from %s", reason, sid, remote)
        raise socketio.exceptions.ConnectionRefusedError(RELAY_REFUSED_MESSAGE)

    def limits(self) -> dict[str, int | None]:
        """The server's own limit on one message, read when asked: it may be set after install."""
        server = getattr(self._server, "server", None) or self._server  # Flask-SocketIO wraps one
        size = getattr(getattr(server, "eio", None), "max_http_buffer_size", None)
        return {"max_bytes": size if isinstance(size, int) and size > 0 else None}

    def relay(self, args: tuple[Any, ...]) -> int:
        """Emit a batch's items in order; answer how many went out."""
        items = args[0] if len(args) == 1 else None
        if not isinstance(items, list):
            logger.warning("relay batch refused: expected one list of [event, payload, user_id]")
            return 0
        emitted = sum(self._emit_item(item) for item in items)
        if emitted < len(items):
            logger.warning(
                "relay batch: %d of %d items not emitted", len(items) - emitted, len(items)
            )
        return emitted

    def _emit_item(self, raw: object) -> bool:
        item = read_relay_item(raw)
        if item is None:
            return False
        room = item.user_id if self._per_user_rooms and item.user_id else None
        self._emit(item.event, item.payload, namespace=self._browser_namespace, to=room)
        return True


def install_relay(
    socketio_server: Any,
    secret: str,
    *,
    namespace: str = RELAY_NAMESPACE,
    browser_namespace: str = "/",
    per_user_rooms: bool = False,
) -> None:
    """Register the relay on a Flask-SocketIO `SocketIO` or a python-socketio `Server`.

    The relay re-emits with the server's own `emit`, not with `forward_direct_emits`'s wrapper,
    whichever of the two is installed first. Raises ValueError at app start-up for a secret
    shorter than RELAY_MIN_SECRET_LENGTH or a relay namespace that is the browsers' own; neither
    message contains the secret.
    """
    if not isinstance(secret, str) or len(secret) < RELAY_MIN_SECRET_LENGTH:
        raise ValueError(f"the relay secret must be at least {RELAY_MIN_SECRET_LENGTH} characters")
    if namespace == browser_namespace:
        raise ValueError(f"the relay namespace {namespace!r} must differ from the browsers'")
    relay = _Relay(socketio_server, secret, browser_namespace, per_user_rooms)
    if hasattr(socketio_server, "on_event"):
        _install_flask(socketio_server, relay, namespace)
    else:
        _install_plain(socketio_server, relay, namespace)


def _install_flask(socketio_ext: Any, relay: _Relay, namespace: str) -> None:
    """Flask-SocketIO calls handlers inside a request context that holds the client's sid."""
    import flask  # noqa: PLC0415 - only a Flask app has it, and only then is it needed

    def on_connect(auth: object = None) -> bool:
        request = flask.request
        return relay.admit(getattr(request, "sid", None), request.remote_addr, auth)

    def on_batch(*args: Any) -> int:
        return relay.relay(args)

    def on_limits(*args: Any) -> dict[str, int | None]:
        return relay.limits()

    socketio_ext.on_event("connect", on_connect, namespace=namespace)
    socketio_ext.on_event(RELAY_BATCH_EVENT, on_batch, namespace=namespace)
    socketio_ext.on_event(RELAY_LIMITS_EVENT, on_limits, namespace=namespace)


def _install_plain(server: Any, relay: _Relay, namespace: str) -> None:
    """A plain python-socketio server passes the sid and the WSGI environ itself."""

    def on_connect(sid: str, environ: dict[str, Any], auth: object = None) -> bool:
        return relay.admit(sid, environ.get("REMOTE_ADDR"), auth)

    def on_batch(sid: str, *args: Any) -> int:
        return relay.relay(args)

    def on_limits(sid: str, *args: Any) -> dict[str, int | None]:
        return relay.limits()

    server.on("connect", on_connect, namespace=namespace)
    server.on(RELAY_BATCH_EVENT, on_batch, namespace=namespace)
    server.on(RELAY_LIMITS_EVENT, on_limits, namespace=namespace)
