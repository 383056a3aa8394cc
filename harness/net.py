"""Loopback ports for the services a run starts, and whether one accepts connections yet."""

from __future__ import annotations

import socket

__all__ = ["accepts_connections", "free_port"]


def free_port() -> int:
    """A port nothing listens on now, chosen by the kernel so parallel runs do not collide."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def accepts_connections(port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts a TCP connection on 127.0.0.1:`port` now."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False
