"""The processes a test run started: found through /proc, orphans included.

The test session makes itself a child subreaper (prctl PR_SET_CHILD_SUBREAPER): a process whose
parent exits is then re-parented to the session instead of to init, so whatever a test started,
however deep and whoever its parent was, stays a descendant the session can list at its end.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = ["Process", "become_subreaper", "descendants", "end", "running_descendants"]

_PR_SET_CHILD_SUBREAPER: Final = 36


@dataclass(frozen=True)
class Process:
    pid: int
    state: str
    command: str

    def __str__(self) -> str:
        return f"pid {self.pid} ({self.state}): {self.command}"


def become_subreaper() -> None:
    """Orphans of any descendant become this process's children (Linux)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def _describe(pid: int) -> Process | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").strip()
    except OSError:
        return None
    state = next(
        (
            line.split(":", 1)[1].strip()
            for line in status.splitlines()
            if line.startswith("State:")
        ),
        "?",
    )
    return Process(pid, state, command.decode(errors="replace")[:200] or "(no command line)")


def descendants(pid: int | None = None) -> list[Process]:
    """Every process below `pid` (this one by default), zombies included, parents first."""
    root = os.getpid() if pid is None else pid
    found: list[Process] = []
    pending = _children(root)
    while pending:
        child = pending.pop(0)
        described = _describe(child)
        if described is not None:
            found.append(described)
            pending += _children(child)
    return found


def running_descendants(grace_s: float, *, ignore: frozenset[int] = frozenset()) -> list[Process]:
    """Descendants still running after up to `grace_s` seconds; dead ones (zombies) are reaped."""
    deadline = time.monotonic() + grace_s
    while True:
        left = []
        for process in descendants():
            if process.pid in ignore:
                continue
            if process.state.startswith("Z"):
                _reap(process.pid)
            else:
                left.append(process)
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.1)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def end(processes: list[Process], grace_s: float = 5.0) -> None:
    """SIGTERM each (by pid), SIGKILL what is left after `grace_s`, and reap them."""
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
    left = running_descendants(grace_s)
    pids = {process.pid for process in processes}
    for process in left:
        if process.pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
    running_descendants(1.0)
