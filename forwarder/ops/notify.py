"""systemd's notify protocol spoken directly, so Type=notify and WatchdogSec= need no library."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Mapping

import structlog

__all__ = ["Notifier"]

log = structlog.get_logger("forwarder.notify")


class Notifier:
    """Sends state datagrams to NOTIFY_SOCKET; without one each call is a no-op; none raises."""

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self.address = address
        self.watchdog_interval_s = watchdog_usec / 2_000_000 if watchdog_usec else None
        """Ping period: half of WatchdogSec=, as sd_watchdog_enabled(3) advises; None when off."""
        self._target = _socket_address(address) if address else None
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._failed = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Notifier:
        """Read what systemd passes; a watchdog meant for another process is ignored."""
        env = os.environ if env is None else env
        address = env.get("NOTIFY_SOCKET") or None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        meant_for_us = not pid or pid == str(os.getpid())
        watchdog_usec = int(usec) if usec.isdigit() and meant_for_us else None
        return cls(address, watchdog_usec)

    def ready(self, status: str | None = None) -> None:
        """Start-up is over: systemd now considers the unit active and starts what waits for it."""
        self._send("READY=1" if status is None else f"READY=1\nSTATUS={status}")

    def status(self, text: str) -> None:
        """A one-line state shown by `systemctl status`."""
        self._send(f"STATUS={text}")

    def watchdog(self) -> None:
        """Proof of life; without one within WatchdogSec= systemd restarts the service."""
        self._send("WATCHDOG=1")

    def stopping(self) -> None:
        """Shutdown has begun, so a slow drain is not mistaken for a hang."""
        self._send("STOPPING=1")

    def close(self) -> None:
        """Release the datagram socket; later calls open a new one."""
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def _send(self, message: str) -> None:
        if self._target is None:
            return
        try:
            with self._lock:
                if self._sock is None:
                    self._sock = socket.socket(
                        socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                    )
                self._sock.sendto(message.encode("utf-8", "replace"), self._target)
        except OSError as exc:
            if not self._failed:
                self._failed = True
                log.warning("notify_failed", socket=self.address, error=str(exc))


def _socket_address(address: str) -> str:
    """A leading @ names a Linux abstract socket, whose real name starts with a NUL byte."""
    return "\0" + address[1:] if address.startswith("@") else address
