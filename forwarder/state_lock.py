"""One forwarder per state directory: two would deliver the same buffer twice and corrupt it."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Final

from emitter.config import ConfigError

__all__ = ["LOCK_FILE", "StateLock"]

LOCK_FILE: Final = "forwarder.lock"


class StateLock:
    """An exclusive lock on FORWARDER_STATE_DIR, held from start to exit; the file names the pid.

    The kernel releases it when the process ends, however it ends: a SIGKILL leaves nothing
    stale behind.
    """

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock; ConfigError naming the directory and the holder's pid if it is taken."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ConfigError(
                "FORWARDER_STATE_DIR",
                str(self.state_dir),
                f"a directory no other forwarder uses; the forwarder with pid {holder} holds it",
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Let another forwarder start here; the file stays, so no waiter locks a removed one."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> StateLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()
