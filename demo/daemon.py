"""The real forwarder as a subprocess, its JSON log shown live as `openalgo-forwarder logs` does."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any, Final

from demo.children import StartError, child, child_env
from demo.console import colour, say
from forwarder.commands.logs import render

__all__ = ["ForwarderLog", "running_forwarder"]

_START_TIMEOUT_S: Final = 30.0
_SHUTDOWN_TIMEOUT_S: Final = 5
_GRACE_S: Final = _SHUTDOWN_TIMEOUT_S + 10.0
"""SIGKILL only once the forwarder had its whole shutdown timeout to deliver what it holds."""
_PREFIX: Final = "forwarder   │ "


class ForwarderLog:
    """Reads the forwarder's output on a thread: prints each line rendered, keeps the events."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._events: list[str] = []
        self._ended = False
        self._changed = threading.Condition()
        self._colour = colour()
        self._reader = threading.Thread(target=self._read, name="forwarder-log", daemon=True)
        self._reader.start()

    def wait_for(self, event: str, timeout_s: float) -> bool:
        """Whether the forwarder logged `event` within `timeout_s` (False once its output ended)."""
        with self._changed:
            self._changed.wait_for(lambda: event in self._events or self._ended, timeout_s)
            return event in self._events

    def join(self) -> None:
        """Wait for the last line, once the process has ended."""
        self._reader.join()

    def _read(self) -> None:
        with self._stream:
            for raw in self._stream:
                text = raw.decode(errors="replace").rstrip("\n")
                record = _parse(text)
                say(_PREFIX + (text if record is None else self._render(record)))
                if record is not None:
                    with self._changed:
                        self._events.append(str(record.get("event")))
                        self._changed.notify_all()
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def _render(self, record: dict[str, Any]) -> str:
        """The viewer's line with the time of day only: the date says nothing in a live demo."""
        timestamp = str(record.get("timestamp", ""))
        record["timestamp"] = timestamp[11:23] if len(timestamp) >= 23 else timestamp
        return render(record, colour=self._colour)


def _parse(text: str) -> dict[str, Any] | None:
    try:
        record = json.loads(text)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


@contextmanager
def running_forwarder(**settings: str) -> Iterator[ForwarderLog]:
    """`python -m forwarder run` once it logged `forwarder_started`; stopped on the way out."""
    env = child_env(
        **settings, LOG_FORMAT="json", FORWARDER_SHUTDOWN_TIMEOUT_S=str(_SHUTDOWN_TIMEOUT_S)
    )
    with child(
        "forwarder",
        [sys.executable, "-m", "forwarder", "run"],
        env=env,
        grace_s=_GRACE_S,
        stdout=subprocess.PIPE,
    ) as forwarder:
        assert forwarder.process.stdout is not None
        log = ForwarderLog(forwarder.process.stdout)
        try:
            if not log.wait_for("forwarder_started", _START_TIMEOUT_S):
                raise StartError("the forwarder did not start: its output is above")
            yield log
        finally:
            forwarder.stop()
            log.join()
