"""A sink's backlog on disk: served from memory while it keeps up, from the file once behind."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from emitter.contract import encode_envelope
from forwarder.backlog import BUFFER_FILE, DiskStore
from forwarder.deadletter import DeadLetters
from forwarder.settings import Settings
from forwarder.sinks.memory import MemorySink
from forwarder.stats import Stats
from tests.support.forwarder import envelope


@pytest.fixture
def store(tmp_path) -> Iterator[DiskStore]:
    stats = Stats()
    opened = DiskStore(
        replace(Settings(), state_dir=tmp_path), [MemorySink()], stats, DeadLetters(tmp_path, stats)
    )
    try:
        yield opened
    finally:
        opened.close()


def put(store: DiskStore, numbers: range, **kwargs) -> None:
    envelopes = [envelope(n, **kwargs) for n in numbers]
    store.put([encode_envelope(e) for e in envelopes], envelopes)


def drain(backlog, limit: int = 500) -> list[str]:
    taken: list[str] = []
    while batch := backlog.take(limit, 0):
        taken.extend(e.id for e in batch.envelopes)
        backlog.done(batch)
    return taken


class TestDiskBacklog:
    def test_a_sink_far_behind_reads_the_file_and_misses_nothing(self, store):
        """More than the in-memory tail holds: the rest comes from SQLite, in order, once each."""
        backlog = store.backlog(MemorySink(), Stats().add_sink("memory", lambda: 0))
        for start in range(0, 30_000, 1_000):
            put(store, range(start, start + 1_000))
        assert drain(backlog) == [f"ev-{n:06d}" for n in range(30_000)]
        assert backlog.depth() == 0

    def test_taking_while_events_arrive_keeps_order(self, store):
        """Interleaved puts and takes, the way the two threads run."""
        backlog = store.backlog(MemorySink(), Stats().add_sink("memory", lambda: 0))
        taken: list[str] = []
        for start in range(0, 3_000, 100):
            put(store, range(start, start + 100))
            batch = backlog.take(70, 0)
            taken.extend(e.id for e in batch.envelopes)
            backlog.done(batch)
        taken.extend(drain(backlog))
        assert taken == [f"ev-{n:06d}" for n in range(3_000)]

    def test_events_a_sink_does_not_want_are_skipped_and_released(self, store):
        browser = MemorySink(wants=lambda e: e.browser)
        backlog = store.backlog(browser, Stats().add_sink("memory", lambda: 0))
        put(store, range(0, 5), browser=False)
        put(store, range(5, 8))
        put(store, range(8, 10), browser=False)
        assert drain(backlog) == ["ev-000005", "ev-000006", "ev-000007"]
        assert backlog.depth() == 0


def test_a_damaged_file_is_counted_and_logged_and_the_store_opens(tmp_path):
    """What an operator sees of a buffer file that failed its check at start."""
    (tmp_path / BUFFER_FILE).write_bytes(b"not a database at all" * 200)
    stats = Stats()
    with capture_logs() as logs:
        opened = DiskStore(
            replace(Settings(), state_dir=tmp_path),
            [MemorySink()],
            stats,
            DeadLetters(tmp_path, stats),
        )
    try:
        put(opened, range(3))
        backlog = opened.backlog(MemorySink(), Stats().add_sink("memory", lambda: 0))
        assert drain(backlog) == ["ev-000000", "ev-000001", "ev-000002"]
    finally:
        opened.close()
    assert stats.buffer_damaged == 1
    [line] = [line for line in logs if line["event"] == "buffer_damaged"]
    assert (line["log_level"], line["salvaged"]) == ("error", 0)
    assert Path(line["moved_to"]).exists()
