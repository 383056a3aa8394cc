"""The session's own end check: what a test leaves running is found, orphans included."""

from __future__ import annotations

import os
import signal
import subprocess
import time

from tests.support.descendants import descendants, running_descendants


def test_an_orphaned_grandchild_is_still_a_descendant():
    """A daemon that double-forks (its parent exits at once) comes back to the session, which
    is a child subreaper, so the end-of-session check lists it."""
    launcher = subprocess.run(
        ["sh", "-c", "sleep 60 >/dev/null 2>&1 & echo $!"],
        capture_output=True,
        text=True,
        check=True,
    )
    orphan = int(launcher.stdout)
    try:
        found = {process.pid: process for process in descendants()}
        assert orphan in found
        assert "sleep 60" in found[orphan].command
        assert orphan in {process.pid for process in running_descendants(0)}
    finally:
        os.kill(orphan, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while orphan in {p.pid for p in running_descendants(0)} and time.monotonic() < deadline:
        time.sleep(0.05)
    assert orphan not in {process.pid for process in descendants()}, "killed, and reaped"
