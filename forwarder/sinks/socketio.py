"""Deliver browser events through the app's Socket.IO relay, the one way into browsers' sockets."""

from __future__ import annotations

import socket
import threading
from collections.abc import Sequence
from typing import Any, Final

import socketio
import structlog

from emitter.contract import (
    RELAY_BATCH_EVENT,
    RELAY_LIMITS_EVENT,
    RELAY_REFUSED_MESSAGE,
    Envelope,
    relay_item,
)
from forwarder.errors import PermanentSinkError, RetriableSinkError, SinkError
from forwarder.sinks.base import Delivery, Sink
from forwarder.sinks.settings import SocketIOSettings

__all__ = ["CALL_MAX", "SocketIOSink", "call_size"]

CALL_MAX: Final = 500
"""Most events in one relay call, whatever their size."""
_ACK_ID: Final = 10**20 - 1
"""The widest acknowledgement id a call can carry: its size is reserved in every call."""
UNIX_URL: Final = "http://localhost"
"""What the client is told to connect to when the unix socket is already connected: the Host."""
log = structlog.get_logger(__name__)


class SocketIOSink(Sink):
    """A python-socketio client on the relay namespace, sending acknowledged calls of CALL_MAX.

    Reconnection is ours, not the client's: its automatic reconnection is off and `deliver`
    connects (bounded by SOCKETIO_ACK_TIMEOUT_S) whenever it finds the client disconnected,
    so every attempt runs on the caller's thread and the retry policy above the sinks paces
    them. The client buffers nothing while disconnected, so nothing is sent behind our back.

    A refused secret is retriable, logged as `relay_auth_refused`, and so is a secret not set
    yet (`relay_secret_missing`): the events wait in the queue while the operator fixes
    SOCKETIO_RELAY_SECRET on either side, instead of being dead-lettered for a mistake that says
    nothing about the events themselves.

    Payloads go out as `msgspec.to_builtins(data)`, so bytes and datetimes reach browsers as
    the base64 and ISO-8601 strings Kafka's JSON carries. Items the relay would skip fail
    permanently here instead, so its count always means "the first n". A batch whose
    acknowledgement was lost is sent again: browsers then see those events twice.

    Calls are bounded by bytes as well as count: each stays within SOCKETIO_MAX_CALL_BYTES and
    the limit the relay gives for its server on connecting, measured as the Engine.IO message
    the client will send. An event that alone exceeds it can never be relayed: it fails
    permanently (dead-lettered), and the events around it go on.
    """

    name = "socketio"
    noisy_libraries = ("socketio", "engineio", "urllib3", "websocket")
    selective = True

    def __init__(self, settings: SocketIOSettings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._refusal: str | None = None
        self._client = socketio.Client(
            reconnection=False, request_timeout=settings.ack_timeout_s, handle_sigint=False
        )
        self._websocket_options: dict[str, Any] = self._client.eio.websocket_extra_options
        """What engine.io passes to websocket-client's create_connection on each connect: the CA
        file for an https URL, and a connected unix socket for a unix: URL."""
        if settings.ca_file is not None:
            self._websocket_options["sslopt"] = {"ca_certs": settings.ca_file}
        self._client.on("connect_error", self._on_connect_error, namespace=settings.namespace)
        self._relay_max: int | None = None
        """What the relay said its server accepts, learned on each connection."""

    def wants(self, envelope: Envelope) -> bool:
        """Only events the browser received before the forwarder existed go to the relay."""
        return envelope.browser

    def deliver(self, batch: Sequence[Envelope]) -> Delivery:
        """Relay the batch in acknowledged calls, in order; what the relay did not acknowledge
        comes back retriable, and nothing after it is sent."""
        items: list[tuple[int, Any, int]] = []
        failed: dict[int, SinkError] = {}
        dumps = self._client.packet_class.json.dumps
        for index, envelope in enumerate(batch):
            try:
                item = relay_item(envelope.event, envelope.data, envelope.user_id)
            except ValueError as exc:
                failed[index] = PermanentSinkError(str(exc))
                continue
            items.append((index, item, len(dumps(item, separators=(",", ":")))))
        if not items:
            return Delivery(failed)
        with self._lock:
            self._connect()
            calls = self._calls(items, failed)
            for number, call in enumerate(calls):
                emitted, reason = self._call([item for _, item, _ in call])
                if emitted < len(call):
                    rest = [index for later in calls[number:] for index, _, _ in later][emitted:]
                    failed.update(dict.fromkeys(rest, RetriableSinkError(reason)))
                    break
        return Delivery(failed)

    def _calls(
        self, items: list[tuple[int, Any, int]], failed: dict[int, SinkError]
    ) -> list[list[tuple[int, Any, int]]]:
        """The items split, in order, into calls within the byte limit and CALL_MAX; an item too
        large for any call fails permanently into `failed`."""
        limit = self.call_limit
        room = limit - call_size(self._settings.namespace, [])
        calls: list[list[tuple[int, Any, int]]] = [[]]
        used = 0
        for index, item, size in items:
            if size > room:
                failed[index] = PermanentSinkError(
                    f"{item[0]} takes {size:,} bytes on the wire: over the {limit:,} bytes a "
                    "relay call may carry (SOCKETIO_MAX_CALL_BYTES, or the relay server's limit)"
                )
                continue
            if calls[-1] and (used + 1 + size > room or len(calls[-1]) == CALL_MAX):
                calls.append([])
                used = 0
            used += size + (1 if calls[-1] else 0)
            calls[-1].append((index, item, size))
        return [call for call in calls if call]

    @property
    def call_limit(self) -> int:
        """The most bytes one call may take: ours, or the relay's server's when that is less."""
        relay = self._relay_max if self._relay_max is not None else self._settings.max_call_bytes
        return min(self._settings.max_call_bytes, relay)

    def check(self) -> str:
        """Connect once, bounded, so a wrong URL or secret shows before events pile up."""
        with self._lock:
            self._connect()
            relay = "unknown" if self._relay_max is None else f"{self._relay_max:,}"
        settings = self._settings
        verified = (
            f", server certificate checked against {settings.ca_file}" if settings.ca_file else ""
        )
        return (
            f"relay at {settings.url}, namespace {settings.namespace}: secret accepted{verified}; "
            f"calls of at most {self.call_limit:,} bytes (its server takes {relay})"
        )

    def close(self) -> None:
        """Disconnect; bounded by the WebSocket close handshake (3 s at most against Werkzeug)."""
        with self._lock:
            self._client.disconnect()

    def _on_connect_error(self, data: object = None) -> None:
        self._refusal = data.get("message") if isinstance(data, dict) else None

    def _connect(self) -> None:
        if self._client.connected:
            return
        settings = self._settings
        if not settings.relay_secret:
            log.warning("relay_secret_missing", url=settings.url, namespace=settings.namespace)
            raise RetriableSinkError(
                "SOCKETIO_RELAY_SECRET is not set: set the secret the app passes to install_relay()"
            )
        self._refusal = None
        url = settings.url
        connection = None
        if settings.unix_socket is not None:
            connection = self._unix_connection(settings.unix_socket)
            self._websocket_options["socket"] = connection
            url = UNIX_URL
        try:
            self._client.connect(
                url,
                auth={"secret": settings.relay_secret},
                namespaces=[settings.namespace],
                transports=["websocket"],
                wait_timeout=settings.ack_timeout_s,
            )
        except (socketio.exceptions.ConnectionError, ValueError) as exc:
            if connection is not None:
                connection.close()
            self._client.disconnect()
            if self._refusal == RELAY_REFUSED_MESSAGE:
                log.warning("relay_auth_refused", url=settings.url, namespace=settings.namespace)
                raise RetriableSinkError(
                    f"the relay at {settings.url} refused SOCKETIO_RELAY_SECRET"
                ) from None
            raise RetriableSinkError(f"cannot reach the relay at {settings.url}: {exc}") from exc
        finally:
            self._websocket_options.pop("socket", None)
        self._relay_max = self._ask_limits()

    def _ask_limits(self) -> int | None:
        """The relay's server's largest message, asked once per connection; None if it does not
        say (a relay from before it could), and then only SOCKETIO_MAX_CALL_BYTES applies."""
        settings = self._settings
        try:
            answer = self._client.call(
                RELAY_LIMITS_EVENT, namespace=settings.namespace, timeout=settings.ack_timeout_s
            )
        except (socketio.exceptions.TimeoutError, socketio.exceptions.BadNamespaceError):
            answer = None
        size = answer.get("max_bytes") if isinstance(answer, dict) else None
        known = size if isinstance(size, int) and not isinstance(size, bool) and size > 0 else None
        log.info(
            "relay_connected",
            url=settings.url,
            namespace=settings.namespace,
            relay_max_bytes=known,
            call_bytes=min(settings.max_call_bytes, known or settings.max_call_bytes),
        )
        return known

    def _unix_connection(self, path: str) -> socket.socket:
        """A stream socket connected to the app's own (gunicorn's), bypassing any proxy."""
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        connection.settimeout(self._settings.ack_timeout_s)
        try:
            connection.connect(path)
        except OSError as exc:
            connection.close()
            raise RetriableSinkError(
                f"cannot reach the relay at {self._settings.url}: {exc}"
            ) from exc
        return connection

    def _call(self, items: list[Any]) -> tuple[int, str]:
        """Send one batch: how many the relay acknowledged, and why the rest were not."""
        timeout = self._settings.ack_timeout_s
        try:
            answer = self._client.call(
                RELAY_BATCH_EVENT, items, namespace=self._settings.namespace, timeout=timeout
            )
        except socketio.exceptions.TimeoutError:
            self._client.disconnect()
            return 0, f"no acknowledgement from the relay within {timeout}s"
        except socketio.exceptions.BadNamespaceError:
            return 0, "the relay connection was lost"
        if isinstance(answer, bool) or not isinstance(answer, int) or answer < 0:
            self._client.disconnect()
            return 0, f"the relay answered {answer!r}, not an emitted count"
        return answer, f"the relay emitted {answer} of {len(items)} events"


def call_size(namespace: str, items: Sequence[Any]) -> int:
    """Bytes of the Engine.IO message one relay call of `items` is, acknowledgement id included:
    what a server compares with its max_http_buffer_size. Measured by encoding it."""
    packet = socketio.packet.Packet(
        socketio.packet.EVENT, [RELAY_BATCH_EVENT, list(items)], namespace=namespace, id=_ACK_ID
    )
    encoded = packet.encode()
    return 1 + len(encoded if isinstance(encoded, str) else encoded[0])  # "4": a message
