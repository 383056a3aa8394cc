"""structlog set up once for the daemon: JSON lines for journald, readable colour on a terminal.

No secret reaches a log line at any level. The Kafka clients' wire loggers, which print whole
requests (kafka-python's SaslAuthenticate request holds the SASL password), stay at WARNING
unless LOG_WIRE=1; and every line, structlog's and the standard library's alike, passes through
a filter that replaces each configured secret (as written, and in the escaped forms a repr or
JSON gives it) with [REDACTED].
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final, TextIO, cast

import structlog
from structlog.typing import EventDict, Processor

if TYPE_CHECKING:  # settings import this module's Throttle (through forwarder.curve)
    from forwarder.settings import LogFormat

__all__ = ["REDACTED", "WIRE_LOGGERS", "RedactingStream", "Redactor", "configure"]

REDACTED: Final = "[REDACTED]"
MIN_SECRET_CHARS: Final = 6
"""Shorter values are not redacted: replacing every "abc" would garble the log, not protect it."""

WIRE_LOGGERS: Final = (
    "kafka.protocol",
    "kafka.net.connection",
    "kafka.net.transport",
    "kafka.cluster",
    "kafka.producer.sender",
    "kafka.producer.transaction_manager",
    "socketio.client",
    "engineio.client",
)
"""Loggers that print requests, responses or packets as they go over the wire: credentials and
event payloads included. Kept at WARNING even at LOG_LEVEL=DEBUG, unless LOG_WIRE=1."""


def configure(
    level: int,
    log_format: LogFormat,
    stream: TextIO | None = None,
    *,
    secrets: Iterable[str] = (),
    wire: bool = False,
    quiet: Iterable[str] = (),
) -> None:
    """Route structlog and the standard library's logging through one renderer on `stream`,
    with `secrets` redacted from every line. The `quiet` loggers (the sinks' client libraries,
    which log every failed connection attempt while `sink_retry` reports each attempt once)
    show only at DEBUG."""
    redactor = Redactor(secrets)
    out = cast(TextIO, RedactingStream(sys.stdout if stream is None else stream, redactor))
    as_json = log_format == "json" or (log_format == "auto" and not out.isatty())
    shared: list[Processor] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Processor
    if as_json:
        shared.append(structlog.processors.format_exc_info)
        renderer = structlog.processors.JSONRenderer()
    else:
        # rich, when installed, colours a traceback token by token and would split a secret apart
        renderer = structlog.dev.ConsoleRenderer(
            colors=True, exception_formatter=structlog.dev.plain_traceback
        )
    shared.append(redactor.processor)  # before rendering: a renderer's repr escapes again
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    debug = level <= logging.DEBUG
    for name in quiet:
        logging.getLogger(name).setLevel(logging.DEBUG if debug else logging.CRITICAL)
    for name in WIRE_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if debug and wire else logging.WARNING)


class Redactor:
    """Replaces each secret, and the escaped forms of it a repr or a JSON string would show."""

    def __init__(self, secrets: Iterable[str]) -> None:
        forms: set[str] = set()
        for secret in secrets:
            if len(secret) >= MIN_SECRET_CHARS:
                forms |= _escaped_forms(secret)
        self.forms = sorted(forms, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for form in self.forms:
            if form in text:
                text = text.replace(form, REDACTED)
        return text

    def processor(self, logger: object, method: str, event_dict: EventDict) -> EventDict:
        """structlog's (and, through the formatter, the standard library's) records, redacted
        value by value before a renderer escapes them."""
        return {key: self._value(value) for key, value in event_dict.items()}

    def _value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self(value)
        if isinstance(value, bytes | bytearray):
            redacted = self(repr(bytes(value)))
            return value if REDACTED not in redacted else redacted
        if isinstance(value, dict):
            return {key: self._value(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self._value(item) for item in value]
        if isinstance(value, tuple):  # exc_info among them: its shape must stay
            return tuple(self._value(item) for item in value)
        return value


def _escaped_forms(secret: str) -> set[str]:
    """The secret as a str repr and a bytes repr write it (either quote escaped), in hex, and
    each of those again as a JSON string writes it."""
    encoded = secret.encode("utf-8", "surrogatepass")
    as_str = "".join(c if c in "'\"" else repr(c)[1:-1] for c in secret)
    as_bytes = "".join(chr(b) if b in b"'\"" else repr(bytes([b]))[2:-1] for b in encoded)
    base = {secret, encoded.hex()}
    for escaped in (as_str, as_bytes):
        base |= {escaped, escaped.replace("'", "\\'"), escaped.replace('"', '\\"')}
    forms = set(base)
    for form in base:
        forms |= {json.dumps(form)[1:-1], json.dumps(form, ensure_ascii=False)[1:-1]}
    return forms


class RedactingStream:
    """A text stream that redacts what is written to it: every log line passes through here."""

    def __init__(self, stream: TextIO, redact: Redactor) -> None:
        self._stream = stream
        self._redact = redact

    def write(self, text: str) -> int:
        self._stream.write(self._redact(text))
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()

    def __getattr__(self, name: str) -> Any:
        """Anything else (fileno, encoding) is the wrapped stream's."""
        return getattr(self._stream, name)
