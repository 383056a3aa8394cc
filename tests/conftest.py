"""Fixtures every test module may use: the Kafka broker, shared per session or private per test."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from harness.broker import KafkaBroker
from tests.support.descendants import become_subreaper, end, running_descendants

EXTERNAL_KAFKA = "KAFKA_TEST_BOOTSTRAP_SERVERS"
THREAD_GRACE_S = 10.0
"""How long a test's threads may take to end after its teardown before the test is failed."""
PROCESS_GRACE_S = 10.0
"""How long processes still running when the session ends may take to go before it fails."""

settings.register_profile(
    "mutation",
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.differing_executors],
)
"""For `make mutation`: mutmut runs each test many times in one process, and every mutant must
meet the same examples."""


def pytest_configure(config: pytest.Config) -> None:
    """Orphaned processes a test leaves behind come back to the session, to be found at its end."""
    become_subreaper()


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The suite ends by listing its own descendants: any still running fails it. (Under xdist
    each worker checks its own; the controller's children are the workers.)"""
    if session.config.pluginmanager.has_plugin("dsession"):
        return
    left = running_descendants(PROCESS_GRACE_S)
    if not left:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    lines = ["processes left running by the test session (now ended):", *(f"  {p}" for p in left)]
    if reporter is not None:
        reporter.write_line("\n".join(lines), red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
    end(left)


@pytest.fixture(autouse=True)
def no_thread_outlives_its_test() -> Iterator[None]:
    """A non-daemon thread left running keeps pytest from exiting: fail the test that left it."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + THREAD_GRACE_S
    while True:
        left = [t for t in threading.enumerate() if t not in before and not t.daemon]
        if not left or time.monotonic() >= deadline:
            break
        left[0].join(0.05)
    assert not left, f"threads still running after the test: {[t.name for t in left]}"


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """A running Kafka's bootstrap servers: $KAFKA_TEST_BOOTSTRAP_SERVERS, else an embedded one."""
    external = os.environ.get(EXTERNAL_KAFKA, "").strip()
    if external:
        yield external
        return
    with KafkaBroker() as broker:
        yield broker.bootstrap


@pytest.fixture
def kafka_broker() -> Iterator[KafkaBroker]:
    """A private embedded broker to stop and restart, even when an external Kafka is set."""
    with KafkaBroker() as broker:
        yield broker


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A short directory other users can enter, under /tmp: pytest's own tmp_path is 0700 under
    root, and deep enough that an ipc socket path in it may pass the 107-byte limit."""
    path = Path(tempfile.mkdtemp(prefix="fwd-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)
