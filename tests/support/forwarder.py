"""The forwarder as a real subprocess with its JSON log lines read; events to feed it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest

from emitter.contract import SCHEMA_VERSION, Envelope, encode_envelope
from emitter.publisher import publisher_from_env
from forwarder.push import push_frames

ROOT = Path(__file__).resolve().parents[2]
_PASSED_THROUGH = ("PATH", "LANG", "LC_ALL", "COVERAGE_PROCESS_START", "TMPDIR")


def forwarder_env(run_dir: Path, **settings: str) -> dict[str, str]:
    """An environment from scratch: endpoint and state under `run_dir`, JSON logs, short retries."""
    env = {name: os.environ[name] for name in _PASSED_THROUGH if name in os.environ}
    env |= {
        "HOME": str(run_dir),
        "FORWARDER_ENDPOINT": f"ipc://{run_dir}/run/events.sock",
        "FORWARDER_STATE_DIR": str(run_dir / "state"),
        "LOG_FORMAT": "json",
        "FORWARDER_RETRY_BASE_MS": "50",
        "FORWARDER_RETRY_MAX_MS": "500",
    }
    return env | settings


def run_cli(
    *args: str, env: Mapping[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """`python -m forwarder ARGS` to completion, with its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "forwarder", *args],
        env=dict(env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class ForwarderProcess:
    """`python -m forwarder run` with a reader thread that parses every line it prints."""

    def __init__(
        self, env: Mapping[str, str], command: Sequence[str] | None = None, *, umask: int = -1
    ) -> None:
        self.env = dict(env)
        self.command = [sys.executable, "-m", "forwarder", "run"] if command is None else command
        self.umask = umask
        """The process's umask, as a unit's UMask= sets it; -1 keeps the test's."""
        self._lines: list[dict[str, Any]] = []
        self._text: list[str] = []
        self._changed = threading.Condition()
        self._process: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    @property
    def pid(self) -> int:
        return self._running().pid

    @property
    def returncode(self) -> int | None:
        return self._running().poll()

    def start(self, timeout: float = 30) -> ForwarderProcess:
        """Start it and wait for `forwarder_started`, its sign that it receives."""
        self._process = subprocess.Popen(
            self.command,
            env=self.env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            umask=self.umask,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.wait_for_log("forwarder_started", timeout)
        return self

    def logs(self, event: str | None = None) -> list[dict[str, Any]]:
        """Every JSON line so far, or those of one event."""
        with self._changed:
            return [line for line in self._lines if event is None or line.get("event") == event]

    def output(self) -> str:
        """Everything printed, for failure messages."""
        with self._changed:
            return "\n".join(self._text)

    def wait_for_log(self, event: str, timeout: float = 15, **match: Any) -> dict[str, Any]:
        """The first `event` line whose fields include `match`; fails the test after `timeout`."""

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

        with self._changed:
            self._changed.wait_for(lambda: found() is not None or self._reader_done(), timeout)
            line = found()
        if line is None:
            pytest.fail(f"no {event} line {match} within {timeout} s; output:\n{self.output()}")
        return line

    def send_signal(self, signum: int) -> None:
        self._running().send_signal(signum)

    def terminate(self) -> None:
        """SIGTERM, as systemd stops the service."""
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self._running().kill()

    def wait(self, timeout: float = 30) -> int:
        """The exit status, once the process ended and all its output was read."""
        status = self._running().wait(timeout)
        if self._reader is not None:
            self._reader.join(timeout)
        return status

    def stop(self) -> None:
        """End it whatever state it is in: SIGTERM, then SIGKILL if it does not go."""
        if self._process is None or self._process.poll() is not None:
            return
        self.terminate()
        try:
            self.wait(30)
        except subprocess.TimeoutExpired:
            self.kill()
            self.wait(10)

    def _running(self) -> subprocess.Popen[str]:
        if self._process is None:
            raise RuntimeError("the forwarder was not started")
        return self._process

    def _reader_done(self) -> bool:
        return self._reader is not None and not self._reader.is_alive()

    def _read(self) -> None:
        process = self._running()
        assert process.stdout is not None
        with process.stdout:
            for raw in process.stdout:
                text = raw.rstrip("\n")
                try:
                    parsed = json.loads(text)
                except ValueError:
                    parsed = None
                with self._changed:
                    self._text.append(text)
                    if isinstance(parsed, dict):
                        self._lines.append(parsed)
                    self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()


@contextmanager
def running_forwarders() -> Iterator[list[ForwarderProcess]]:
    """A list for started forwarders; each is stopped on the way out, test failed or not."""
    started: list[ForwarderProcess] = []
    try:
        yield started
    finally:
        for process in started:
            process.stop()


def envelope(
    number: int, *, user: str | None = "user1", prefix: str = "ev", browser: bool = True
) -> Envelope:
    """A valid envelope whose id and payload tell which one it is."""
    return Envelope(
        SCHEMA_VERSION,
        f"{prefix}-{number:06d}",
        time.time_ns(),
        "order_event",
        "order.placed",
        user,
        user or "admin",
        {"symbol": "SBIN-EQ", "action": "BUY", "orderid": f"ORD{number}", "mode": "live"},
        browser,
    )


GARBAGE = [
    b"\x8f\x00\x13\x37 random bytes \xfe\xff",
    encode_envelope(envelope(999_999))[:-7],
    msgspec.msgpack.encode([2, "ev-next-schema", 1, "order_event", None, "u", "u", {}, True]),
    b"",
]
"""Frames a forwarder must refuse: random bytes, cut msgpack, a future schema, an empty frame."""


def push_envelopes(endpoint: str, prefix: str, count: int) -> None:
    """Entry point of an emitting process: `count` envelopes with ids `prefix-000000`..."""
    push_frames(endpoint, (encode_envelope(envelope(i, prefix=prefix)) for i in range(count)))


@contextmanager
def emitting_processes(
    target: Callable[..., None], calls: Iterable[tuple[str | int, ...]]
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """One process per call of `target` (a function of this module), as gunicorn workers are
    separate processes; each is waited for (killed if it hangs) on the way out.

    Plain subprocesses, not multiprocessing: its spawn context starts a resource tracker process
    that outlives the test session."""
    started = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                f"from tests.support.forwarder import {target.__name__} as f; f(*{args!r})",
            ],
            cwd=ROOT,
        )
        for args in calls
    ]
    try:
        yield started
    finally:
        for process in started:
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def publish_orders(endpoint: str, user: str, count: int) -> None:
    """Entry point of an emitting process using the real publisher: `count` orders of `user`."""
    publisher = publisher_from_env({"FORWARDER_ENDPOINT": endpoint})
    try:
        for seq in range(count):
            if not publisher.publish_order_event(
                user, "SBIN-EQ", "BUY", f"{user}-{seq}", "live", exchange="NSE", seq=seq
            ):
                raise RuntimeError(f"the publisher dropped {user}-{seq}")
    finally:
        publisher.close()
