"""One writer for the terminal, so lines from the log-reading thread never cut into others."""

from __future__ import annotations

import os
import sys
import threading
from typing import Final

__all__ = ["colour", "say"]

_lock: Final = threading.Lock()


def say(text: str = "") -> None:
    """Print one line at once and flush it, so a pipe (the tests, `tee`) sees it immediately."""
    with _lock:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()


def colour() -> bool:
    """Colour only on a terminal, and never when NO_COLOR is set."""
    return "NO_COLOR" not in os.environ and sys.stdout.isatty()
