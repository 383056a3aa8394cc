"""The harness's own promises: a child's whole process group is ended, and waits wait."""

from __future__ import annotations

import subprocess
import time

import pytest

from harness.processes import Child, child_env
from harness.waits import WaitTimeoutError, poll, wait_until
from tests.support.descendants import running_descendants


class TestChild:
    def test_stop_ends_a_grandchild_that_outlived_its_parent(self):
        """SIGTERM reaches the child alone; what it started and left behind goes with its group."""
        lines: list[str] = []
        child = Child(
            "shell",
            ["sh", "-c", "sleep 60 & echo $!; wait"],
            env=child_env(),
            stdout=subprocess.PIPE,
            report=lines.append,
        )
        assert child.process.stdout is not None
        with child.process.stdout as stdout:
            grandchild = int(stdout.readline())
        try:
            assert grandchild in {p.pid for p in running_descendants(0)}
        finally:
            child.stop()
        assert not child.running
        wait_until(
            lambda: grandchild not in {p.pid for p in running_descendants(0)},
            10,
            what="the grandchild to end",
        )
        assert lines == [
            f"started shell pid={child.pid}",
            f"stopped shell pid={child.pid} (exit status {child.process.returncode})",
        ]

    def test_stop_kills_a_child_that_ignores_sigterm_once_the_grace_period_passed(self):
        """A child that traps SIGTERM is SIGKILLed after `grace_s`, and stop() returns."""
        child = Child(
            "stubborn",
            ["sh", "-c", "trap '' TERM; echo ready; while :; do sleep 0.1; done"],
            env=child_env(),
            grace_s=0.5,
            stdout=subprocess.PIPE,
        )
        assert child.process.stdout is not None
        with child.process.stdout as stdout:
            assert stdout.readline() == b"ready\n"
        child.stop()
        assert child.process.returncode == -9


class TestWaits:
    def test_wait_until_returns_the_conditions_first_true_value(self):
        values = iter([0, None, "", "found"])
        assert wait_until(lambda: next(values), 5, interval=0.001) == "found"

    def test_wait_until_fails_the_test_naming_what_it_waited_for(self):
        started = time.monotonic()
        with pytest.raises(WaitTimeoutError, match="waiting for the impossible") as raised:
            wait_until(lambda: False, 0.2, what="the impossible")
        assert isinstance(raised.value, AssertionError)
        assert time.monotonic() - started >= 0.2

    def test_poll_checks_once_more_at_the_deadline(self):
        """A condition that becomes true during the last interval still counts."""
        deadline = time.monotonic() + 0.1
        assert poll(lambda: time.monotonic() >= deadline, 0.1, interval=1.0) is True
