"""Whether a process listens on a unix socket file: the control socket and the ipc endpoint both
ask before they replace a file a crashed forwarder left behind."""

from __future__ import annotations

import socket
from pathlib import Path

__all__ = ["listening"]


def listening(path: Path, timeout_s: float = 1.0) -> bool:
    """Only a refused connection (or a file gone meanwhile) proves nobody listens; any other
    failure (no permission, no answer in time) counts as a listener, so a live one is never
    replaced."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(timeout_s)
        try:
            probe.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            return False
        except OSError:
            return True
        return True
