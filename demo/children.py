"""Start the demo's processes so that every one is stopped again, however the demo ends."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Final

from demo.console import say

__all__ = ["ROOT", "Child", "StartError", "child", "child_env"]

ROOT: Final = Path(__file__).resolve().parent.parent
_PASSED_THROUGH: Final = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "COVERAGE_PROCESS_START")
_KILL_WAIT_S: Final = 5.0


class StartError(RuntimeError):
    """A process the demo needs did not start; the message says which and what it printed."""


def child_env(**settings: str) -> dict[str, str]:
    """An environment from scratch: the user's own KAFKA_* or SOCKETIO_* must not leak in."""
    env = {name: os.environ[name] for name in _PASSED_THROUGH if name in os.environ}
    return env | settings


class Child:
    """A started process and how to end it: SIGTERM, then SIGKILL once `grace_s` has passed."""

    def __init__(self, name: str, process: subprocess.Popen[bytes], grace_s: float) -> None:
        self.name = name
        self.process = process
        self._grace_s = grace_s
        self._stopped = False

    def stop(self) -> None:
        """End the process if it still runs and report it; calling it again does nothing."""
        try:
            self._stop()
        finally:
            # A Ctrl-C arriving mid-stop cuts the first call short; the signal handler then
            # ignores further ones, so this second call completes it. Once stopped, a no-op.
            self._stop()

    def _stop(self) -> None:
        if self._stopped:
            return
        process = self.process
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(self._grace_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(_KILL_WAIT_S)
        self._stopped = True
        say(f"demo: stopped {self.name} pid={process.pid} (exit status {process.returncode})")


@contextmanager
def child(
    name: str,
    argv: Sequence[str],
    *,
    env: dict[str, str],
    grace_s: float,
    stdout: int | IO[bytes],
    stderr: int | IO[bytes] = subprocess.STDOUT,
) -> Iterator[Child]:
    """Run `argv` from the checkout, announced with its pid and stopped on the way out.

    Each child gets a process group of its own: Ctrl-C reaches the demo alone, which then stops
    the forwarder first (so it can deliver what it holds) and the services after it.
    """
    process = subprocess.Popen(  # noqa: S603 - fixed arguments built by the demo itself
        argv,
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        process_group=0,
    )
    started = Child(name, process, grace_s)
    try:
        say(f"demo: started {name} pid={process.pid}")
        yield started
    finally:
        started.stop()
