"""The forwarder's JSON log shown live, each line as `openalgo-forwarder logs` renders it."""

from __future__ import annotations

from typing import Any, Final

from demo.console import colour, say
from forwarder.commands.logs import render
from harness.forwarder import LineHandler

__all__ = ["log_printer"]

_PREFIX: Final = "forwarder   │ "


def log_printer() -> LineHandler:
    """Prints each line the forwarder writes, rendered when it is a JSON record."""
    in_colour = colour()

    def show(text: str, record: dict[str, Any] | None) -> None:
        if record is None:
            say(_PREFIX + text)
            return
        # The time of day only: the date says nothing in a live demo.
        timestamp = str(record.get("timestamp", ""))
        shown = record | {"timestamp": timestamp[11:23] if len(timestamp) >= 23 else timestamp}
        say(_PREFIX + render(shown, colour=in_colour))

    return show
