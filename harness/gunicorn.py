"""gunicorn serving an app as OpenAlgo's start.sh runs it.

One worker, the given worker class (`eventlet` in OpenAlgo's production), OpenAlgo's timeouts,
no control socket, bound to a free loopback port. The master is a child in a process group of
its own, so the worker goes with it even when the caller fails half-way.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import requests

from harness.processes import Child, StartError
from harness.waits import poll

__all__ = ["Gunicorn", "gunicorn"]

_START_TIMEOUT_S: Final = 60.0
_GRACE_S: Final = 40.0
"""Above --graceful-timeout: the master stops its worker gracefully, as systemd or Docker do."""
_LISTENING: Final = re.compile(r"Listening at: (http://127\.0\.0\.1:\d+)")


class Gunicorn:
    """The running master: its URL, its log, and the app's own view of the emitter."""

    def __init__(self, child: Child, url: str, log_path: Path) -> None:
        self.child = child
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


def _serving_url(child: Child, log_path: Path) -> str:
    def answering() -> str | None:
        if not child.running:
            raise StartError(f"gunicorn exited:\n{log_path.read_text(errors='replace')}")
        found = _LISTENING.search(log_path.read_text(errors="replace"))
        if found is None:
            return None
        try:
            requests.get(f"{found.group(1)}/ping", timeout=5).raise_for_status()
        except requests.RequestException:
            return None
        return found.group(1)

    url = poll(answering, _START_TIMEOUT_S, interval=0.1)
    if url is None:
        raise StartError(f"gunicorn did not serve /ping:\n{log_path.read_text(errors='replace')}")
    return url


@contextmanager
def gunicorn(
    worker_class: str,
    env: Mapping[str, str],
    log_path: Path,
    *,
    app: str,
    preload: bool = False,
) -> Iterator[Gunicorn]:
    """A started gunicorn serving `app` (`module:factory()`), stopped with its worker however
    the caller ends."""
    argv = [
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
        child = Child("gunicorn", argv, env=env, grace_s=_GRACE_S, stdout=log)
    try:
        yield Gunicorn(child, _serving_url(child, log_path), log_path)
    finally:
        child.stop()
