"""`python -m demo` end to end: every event arrives, and Ctrl-C leaves no process behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STARTED = re.compile(r"^demo: started (\S+) pid=(\d+)$", re.MULTILINE)
CHILDREN = {"broker", "socketio-app", "forwarder"}

pytestmark = pytest.mark.integration


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class DemoRun:
    """The demo as a subprocess, its output read line by line on a thread as it comes."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "demo"],
            cwd=ROOT,
            env=os.environ | {"NO_COLOR": "1"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, name="demo-output")
        self._reader.start()

    def output(self) -> str:
        with self._changed:
            return "\n".join(self._lines)

    def started(self) -> dict[str, int]:
        """The processes the demo announced, by name."""
        return {name: int(pid) for name, pid in STARTED.findall(self.output())}

    def wait_for_text(self, text: str, timeout: float) -> None:
        with self._changed:
            found = self._changed.wait_for(
                lambda: any(text in line for line in self._lines) or not self._reader.is_alive(),
                timeout,
            )
        if not found or text not in self.output():
            pytest.fail(f"the demo never printed {text!r}; output:\n{self.output()}")

    def wait(self, timeout: float) -> int:
        status = self.process.wait(timeout)
        self._reader.join(timeout)
        return status

    def close(self) -> None:
        """Whatever happened: the demo ends, and so does anything it started and left running."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for pid in self.started().values():
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        self._reader.join(10)

    def _read(self) -> None:
        assert self.process.stdout is not None
        with self.process.stdout:
            for line in self.process.stdout:
                with self._changed:
                    self._lines.append(line.rstrip("\n"))
                    self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()


@contextmanager
def demo_run() -> Iterator[DemoRun]:
    run = DemoRun()
    try:
        yield run
    finally:
        run.close()


class TestDemo:
    def test_everything_published_arrives_within_a_minute(self):
        """The demo exits 0, says every event matched, and stops what it started, in under 60 s."""
        started = time.monotonic()
        with demo_run() as run:
            status = run.wait(timeout=90)
            elapsed = time.monotonic() - started
            output = run.output()
            children = run.started()
            left = [name for name, pid in children.items() if alive(pid)]
        assert status == 0, output
        assert re.search(
            r"^summary: every event id arrived once, in the order published; took [0-9.]+ s$",
            output,
            re.MULTILINE,
        ), output
        assert "(Kafka only: browser=False)" in output
        assert "summary: Kafka received 15 of 15 (15 distinct event ids, 0 repeated)" in output
        assert elapsed < 60, output
        assert set(children) == CHILDREN, output
        assert left == [], output

    def test_ctrl_c_stops_every_process_it_started(self):
        """SIGINT once the forwarder runs: the demo exits 130 and none of its processes is left."""
        with demo_run() as run:
            run.wait_for_text("forwarder_started", timeout=60)
            run.process.send_signal(signal.SIGINT)
            status = run.wait(timeout=60)
            output = run.output()
            children = run.started()
            left = [name for name, pid in children.items() if alive(pid)]
        assert status == 128 + signal.SIGINT, output
        assert "demo: interrupted by SIGINT" in output
        assert set(children) == CHILDREN, output
        assert left == [], output
