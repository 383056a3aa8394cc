"""The forwarder as a real child process, its JSON log lines read as they come."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from harness.processes import ROOT, Child, Report, StartError, child_env, silent
from harness.waits import WaitTimeoutError, poll

__all__ = ["ForwarderProcess", "LineHandler", "forwarder_env", "run_cli", "running_forwarders"]

_START_TIMEOUT_S: Final = 30.0
_GRACE_S: Final = 30.0

LineHandler = Callable[[str, "dict[str, Any] | None"], None]
"""Called on the reader thread with each line printed and its JSON object, if it is one."""


def forwarder_env(run_dir: Path, *, short_retries: bool = True, **settings: str) -> dict[str, str]:
    """An environment from scratch: endpoint and state under `run_dir`, JSON logs, and retries
    after 50 ms to 500 ms so a test sees recovery soon (the defaults with `short_retries=False`)."""
    retries = {"FORWARDER_RETRY_BASE_MS": "50", "FORWARDER_RETRY_MAX_MS": "500"}
    env = child_env(
        HOME=str(run_dir),
        FORWARDER_ENDPOINT=f"ipc://{run_dir}/run/events.sock",
        FORWARDER_STATE_DIR=str(run_dir / "state"),
        LOG_FORMAT="json",
    )
    return env | (retries if short_retries else {}) | settings


def run_cli(
    *args: str, env: Mapping[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """`python -m forwarder ARGS` to completion, with its output captured."""
    return subprocess.run(  # noqa: S603 - fixed interpreter and module, arguments of the caller
        [sys.executable, "-m", "forwarder", *args],
        env=dict(env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _ignore(text: str, record: dict[str, Any] | None) -> None:
    """The default line handler: lines are only kept."""


class ForwarderProcess:
    """`python -m forwarder run` with a reader thread that parses every line it prints."""

    def __init__(
        self,
        env: Mapping[str, str],
        command: Sequence[str] | None = None,
        *,
        umask: int = -1,
        grace_s: float = _GRACE_S,
        on_line: LineHandler = _ignore,
        report: Report = silent,
        log_path: Path | None = None,
    ) -> None:
        self.env = dict(env)
        self.command = [sys.executable, "-m", "forwarder", "run"] if command is None else command
        self.umask = umask
        """The process's umask, as a unit's UMask= sets it; -1 keeps the caller's."""
        self.grace_s = grace_s
        """How long stop() waits after SIGTERM before SIGKILL."""
        self._on_line = on_line
        self._report = report
        self.log_path = log_path
        """Where the output goes instead of a pipe, read only when asked: a benchmark's own
        process then spends nothing on the forwarder's log while it measures."""
        self._read_up_to = 0
        self._lines: list[dict[str, Any]] = []
        self._text: list[str] = []
        self._changed = threading.Condition()
        self._child: Child | None = None
        self._reader: threading.Thread | None = None

    @property
    def pid(self) -> int:
        return self._running().pid

    @property
    def returncode(self) -> int | None:
        return self._running().process.poll()

    def start(self, timeout: float = _START_TIMEOUT_S) -> ForwarderProcess:
        """Start it and wait for `forwarder_started`, its sign that it receives."""
        with contextlib.ExitStack() as stack:
            stdout = (
                subprocess.PIPE
                if self.log_path is None
                else stack.enter_context(self.log_path.open("wb"))
            )
            self._child = Child(
                "forwarder",
                self.command,
                env=self.env,
                grace_s=self.grace_s,
                stdout=stdout,
                umask=self.umask,
                report=self._report,
            )
        if self.log_path is None:
            self._reader = threading.Thread(target=self._read, name="forwarder-log", daemon=True)
            self._reader.start()
        try:
            self.wait_for_log("forwarder_started", timeout)
        except WaitTimeoutError as exc:
            raise StartError(f"the forwarder did not start: {exc}") from None
        return self

    def logs(self, event: str | None = None) -> list[dict[str, Any]]:
        """Every JSON line so far, or those of one event."""
        self._read_file()
        with self._changed:
            return [line for line in self._lines if event is None or line.get("event") == event]

    def output(self) -> str:
        """Everything printed, for failure messages."""
        self._read_file()
        with self._changed:
            return "\n".join(self._text)

    def wait_for_log(self, event: str, timeout: float = 15, **match: Any) -> dict[str, Any]:
        """The first `event` line whose fields include `match`; fails after `timeout` s."""

        def found() -> dict[str, Any] | None:
            return next(
                (
                    line
                    for line in self._lines
                    if line.get("event") == event
                    and all(line.get(k) == v for k, v in match.items())
                ),
                None,
            )

        def seen() -> tuple[dict[str, Any] | None] | None:
            """(the line,) once found, (None,) once the output ended without it."""
            ended = self._reader_done() if self.log_path is None else not self._running().running
            self._read_file()
            with self._changed:
                line = found()
            return (line,) if line is not None or ended else None

        if self.log_path is None:
            with self._changed:
                self._changed.wait_for(lambda: seen() is not None, timeout)
        outcome = poll(seen, 0 if self.log_path is None else timeout)
        line = None if outcome is None else outcome[0]
        if line is None:
            raise WaitTimeoutError(
                f"no {event} line {match} within {timeout} s; output:\n{self.output()}"
            )
        return line

    def send_signal(self, signum: int) -> None:
        self._running().process.send_signal(signum)

    def terminate(self) -> None:
        """SIGTERM, as systemd stops the service."""
        self._running().process.terminate()

    def kill(self) -> None:
        self._running().process.kill()

    def wait(self, timeout: float = 30) -> int:
        """The exit status, once the process ended and all its output was read."""
        status = self._running().process.wait(timeout)
        if self._reader is not None:
            self._reader.join(timeout)
        return status

    def stop(self) -> None:
        """End it whatever state it is in (SIGTERM, SIGKILL after `grace_s`), its output read."""
        if self._child is None:
            return
        self._child.stop()
        if self._reader is not None:
            self._reader.join(_GRACE_S)

    def _running(self) -> Child:
        if self._child is None:
            raise RuntimeError("the forwarder was not started")
        return self._child

    def _reader_done(self) -> bool:
        return self._reader is not None and not self._reader.is_alive()

    def _read(self) -> None:
        stdout = self._running().process.stdout
        assert stdout is not None
        with stdout:
            for raw in stdout:
                self._keep(raw)
        with self._changed:
            self._changed.notify_all()

    def _read_file(self) -> None:
        """The complete lines written to `log_path` since the last call."""
        if self.log_path is None or not self.log_path.exists():
            return
        with self.log_path.open("rb") as log:
            log.seek(self._read_up_to)
            written = log.read()
        complete = written[: written.rfind(b"\n") + 1]
        self._read_up_to += len(complete)
        for raw in complete.splitlines():
            self._keep(raw)

    def _keep(self, raw: bytes) -> None:
        text = raw.decode(errors="replace").rstrip("\n")
        record = _parse(text)
        self._on_line(text, record)
        with self._changed:
            self._text.append(text)
            if record is not None:
                self._lines.append(record)
            self._changed.notify_all()


def _parse(text: str) -> dict[str, Any] | None:
    try:
        record = json.loads(text)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


@contextmanager
def running_forwarders() -> Iterator[list[ForwarderProcess]]:
    """A list for started forwarders; each is stopped on the way out, whatever happened."""
    started: list[ForwarderProcess] = []
    try:
        yield started
    finally:
        for process in started:
            process.stop()
