"""gunicorn serving an app (tests.support.openalgo_app by default) as OpenAlgo's start.sh runs it.

One worker, the given worker class (`eventlet` in OpenAlgo's production), OpenAlgo's timeouts,
no control socket, bound to a free loopback port. The master runs in its own session, so the
worker goes with it even when a test fails half-way: it is ended by its process group id.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 60.0
LISTENING = re.compile(r"Listening at: (http://127\.0\.0\.1:\d+)")


class Gunicorn:
    """The running master: its URL, its log, and the app's own view of the emitter."""

    def __init__(self, process: subprocess.Popen[bytes], url: str, log_path: Path) -> None:
        self.process = process
        self.url = url
        self.log_path = log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def emitter(self) -> dict[str, Any]:
        """The app's `/emitter` answer: counters, worker model, order ids queued in order."""
        answer = requests.get(f"{self.url}/emitter", timeout=30)
        answer.raise_for_status()
        result: dict[str, Any] = answer.json()
        return result


def _wait_for_url(process: subprocess.Popen[bytes], log_path: Path) -> str:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and process.poll() is None:
        found = LISTENING.search(log_path.read_text(errors="replace"))
        if found:
            url = found.group(1)
            try:
                requests.get(f"{url}/ping", timeout=5).raise_for_status()
            except requests.RequestException:
                time.sleep(0.1)
                continue
            return url
        time.sleep(0.1)
    raise RuntimeError(f"gunicorn did not serve /ping:\n{log_path.read_text(errors='replace')}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the master (a graceful stop, as systemd or Docker do), then SIGKILL the group."""
    if process.poll() is None:
        process.terminate()
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout=40)
    with suppress(ProcessLookupError):  # the worker, should it outlive its master
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@contextmanager
def gunicorn(
    worker_class: str,
    env: Mapping[str, str],
    log_path: Path,
    *,
    preload: bool = False,
    app: str = "tests.support.openalgo_app:create_app()",
) -> Iterator[Gunicorn]:
    """A started gunicorn serving `app`, stopped with its worker however the caller ends."""
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "--worker-class",
        worker_class,
        "--workers",
        "1",
        "--bind",
        "127.0.0.1:0",
        "--timeout",
        "300",
        "--graceful-timeout",
        "30",
        "--no-control-socket",
        "--log-level",
        "info",
        *(["--preload"] if preload else []),
        app,
    ]
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=dict(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield Gunicorn(process, _wait_for_url(process, log_path), log_path)
    finally:
        _stop(process)
