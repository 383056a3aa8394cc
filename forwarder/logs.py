"""structlog set up once for the daemon: JSON lines for journald, readable colour on a terminal."""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, TextIO

import structlog
from structlog.typing import Processor

if TYPE_CHECKING:  # settings import this module's Throttle (through forwarder.curve)
    from forwarder.settings import LogFormat

__all__ = ["Throttle", "configure"]

_QUIET_LIBRARIES: Final = (
    "kafka",
    "confluent_kafka",
    "socketio",
    "engineio",
    "urllib3",
    "websocket",
)
"""Client libraries that log every failed connection attempt, several a second while a broker is
down; the sinks report the same failures once per attempt in `sink_retry`. Shown at DEBUG only."""


def configure(level: int, log_format: LogFormat, stream: TextIO | None = None) -> None:
    """Route structlog and the standard library's logging through one renderer on `stream`."""
    stream = sys.stdout if stream is None else stream
    as_json = log_format == "json" or (log_format == "auto" and not stream.isatty())
    shared: list[Processor] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Processor
    if as_json:
        shared.append(structlog.processors.format_exc_info)
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=True)
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in _QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(
            logging.DEBUG if level <= logging.DEBUG else logging.CRITICAL
        )


class Throttle:
    """Lets one line through per interval and counts those held back: a flood stays readable."""

    def __init__(
        self, interval_s: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._next = float("-inf")
        self._held = 0

    def ready(self) -> int | None:
        """None to stay silent; else how many lines were held back since the last one."""
        now = self._clock()
        with self._lock:
            if now < self._next:
                self._held += 1
                return None
            held, self._held = self._held, 0
            self._next = now + self._interval_s
            return held
