"""Child processes that are stopped however the caller ends: each in a process group of its own,
ended by its pid (SIGTERM, as systemd stops a service) and then by its group (SIGKILL)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Final, Self

__all__ = ["ROOT", "Child", "Report", "Service", "StartError", "child_env", "silent"]

ROOT: Final = Path(__file__).resolve().parent.parent
"""The checkout: children run from it, so `python -m harness...` and `-m forwarder` resolve."""
_PASSED_THROUGH: Final = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "COVERAGE_PROCESS_START")
_KILL_WAIT_S: Final = 5.0

Report = Callable[[str], None]
"""Told `started NAME pid=N` and `stopped NAME pid=N (exit status S)`: the demo prints them."""


class StartError(RuntimeError):
    """A process did not start; the message says which and what it printed."""


def child_env(**settings: str) -> dict[str, str]:
    """An environment from scratch: the user's own KAFKA_* or SOCKETIO_* must not leak in."""
    env = {name: os.environ[name] for name in _PASSED_THROUGH if name in os.environ}
    return env | settings


class Service:
    """Started on entering a `with` block and stopped on leaving it, however the block ends."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def silent(line: str) -> None:
    """The default report: nothing."""


class Child:
    """A started process: its pid kept, and how to end it, SIGKILL once `grace_s` has passed.

    Its own process group: Ctrl-C reaches the parent alone, which stops its children in the
    order it chooses, and a grandchild (gunicorn's worker) goes with the group.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        grace_s: float = 10.0,
        stdout: int | IO[bytes] | None = subprocess.DEVNULL,
        stderr: int | IO[bytes] | None = subprocess.STDOUT,
        umask: int = -1,
        report: Report = silent,
    ) -> None:
        self.name = name
        self.grace_s = grace_s
        self._report = report
        self._stopped = False
        self.process = subprocess.Popen(  # noqa: S603 - argv is built by the harness itself
            argv,
            cwd=ROOT,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            umask=umask,
            process_group=0,
        )
        report(f"started {name} pid={self.process.pid}")

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        """End the process and whatever is left of its group; calling it again does nothing."""
        try:
            self._stop()
        finally:
            # A Ctrl-C arriving mid-stop cuts the first call short; the demo's signal handler
            # then ignores further ones, so this second call completes it. Once stopped, a no-op.
            self._stop()

    def _stop(self) -> None:
        if self._stopped:
            return
        process = self.process
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(self.grace_s)
            except subprocess.TimeoutExpired:
                self._kill_group()
                process.wait(_KILL_WAIT_S)
        self._kill_group()  # a grandchild that outlived its parent
        self._stopped = True
        self._report(f"stopped {self.name} pid={process.pid} (exit status {process.returncode})")

    def _kill_group(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
