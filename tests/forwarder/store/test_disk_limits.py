"""The disk store at its limits: a refused write, room made by dropping the oldest, rows released
a slice at a time, progress saved between receives."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from emitter.contract import encode_envelope
from forwarder.store import BUFFER_FILE, DiskStore, open_disk
from forwarder.store.base import BUFFER_FULL, WRITE_FAILED, Stored
from harness.events import numbered
from harness.waits import wait_until
from tests.forwarder.store.test_disk import drain, put, rows

SIZE = len(encode_envelope(numbered(100)))
"""Events 100 to 999 all encode to this many bytes."""


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / BUFFER_FILE


@pytest.fixture
def stores() -> Iterator[list[DiskStore]]:
    opened: list[DiskStore] = []
    yield opened
    for store in opened:
        if not store._tail.closed:
            store.close()


def opened(stores: list[DiskStore], path: Path, sinks=("kafka",), **kwargs) -> DiskStore:
    kwargs.setdefault("max_bytes", 1 << 24)
    store, _ = open_disk(path, sinks, **kwargs)
    stores.append(store)
    return store


def stored_runs(path: Path) -> list[tuple[int, int]]:
    with closing(sqlite3.connect(path)) as db:
        return db.execute("SELECT last_seq, count FROM runs ORDER BY last_seq").fetchall()


def acked(path: Path) -> dict[str, int]:
    with closing(sqlite3.connect(path)) as db:
        return dict(db.execute("SELECT sink, acked FROM cursors").fetchall())


class TestRefusedWrite:
    def test_events_wait_in_memory_up_to_the_queue_max_and_are_stored_once_it_writes(
        self, stores, path
    ):
        """A disk that refuses (here SQLite's query_only, as a full disk would at COMMIT): the
        events wait, the oldest past FORWARDER_QUEUE_MAX are dropped for every sink, and the
        rest are stored in order once writing works again."""
        store = opened(stores, path, sinks=("kafka", "relay"), queue_max=5)
        store._db.execute("PRAGMA query_only = 1")
        first = put(store, range(3))
        assert (first.dropped, first.reason, first.unwritten) == ({}, WRITE_FAILED, 3)
        assert first.error is not None
        assert "readonly" in first.error
        second = put(store, range(3, 9))
        assert (second.dropped, second.reason, second.unwritten) == (
            {"kafka": 4, "relay": 4},
            WRITE_FAILED,
            5,
        )
        assert second.error == first.error
        store._db.execute("PRAGMA query_only = 0")
        assert store.maintain() == Stored()
        assert drain(store.reader("kafka")) == list(range(4, 9))

    def test_a_queue_exactly_full_drops_nothing(self, stores, path):
        store = opened(stores, path, queue_max=3)
        store._db.execute("PRAGMA query_only = 1")
        assert put(store, range(3)).dropped == {}
        assert put(store, range(3, 4)).dropped == {"kafka": 1}

    def test_progress_that_cannot_be_saved_is_reported_and_saved_later(self, stores, path):
        store = opened(stores, path)
        put(store, range(10))
        drain(store.reader("kafka"))
        store._db.execute("PRAGMA query_only = 1")
        refused: list[Stored] = []
        wait_until(
            lambda: refused.append(store.maintain()) or refused[-1].error is not None,
            what="a save of the progress refused",
        )
        assert "readonly" in str(refused[-1].error)
        store._db.execute("PRAGMA query_only = 0")
        wait_until(lambda: store.maintain() == Stored() and rows(path) == 0, what="progress saved")
        assert acked(path) == {"kafka": 10}


class TestMaintain:
    def test_what_a_sink_finished_is_recorded_and_released_between_receives(self, stores, path):
        """With no new event to write, maintain() still records progress and removes rows."""
        store = opened(stores, path)
        put(store, range(10))
        put(store, range(10, 20))
        backlog = store.reader("kafka")
        batch = backlog.take(10, 0)
        backlog.done(batch)
        assert store.maintain() == Stored()
        wait_until(
            lambda: store.maintain() == Stored() and rows(path) == 1, what="first run released"
        )
        assert acked(path) == {"kafka": 10}
        assert stored_runs(path) == [(20, 10)]


class TestDropOldest:
    def test_whole_runs_go_first_then_part_of_the_next_to_the_byte(self, stores, path):
        """Room for one new event is made by deleting one old one: the stored run is cut, not
        deleted, and the cut run keeps its newer events."""
        store = opened(stores, path, max_bytes=10 * SIZE, when_full="drop_oldest")
        put(store, range(100, 104))
        put(store, range(104, 110))
        assert put(store, range(110, 116)) == Stored({"kafka": 6}, BUFFER_FULL)
        assert stored_runs(path) == [(10, 4), (16, 6)]
        assert store.reader("kafka").waiting() == 10
        assert drain(store.reader("kafka")) == list(range(106, 116))

    def test_a_held_sink_loses_what_it_had_not_finished(self, stores, path):
        """A sink switched off keeps its events until room is needed; then what is deleted comes
        off what it holds, except what it had finished, and off the configured sink's queue."""
        store = opened(stores, path, sinks=("kafka", "relay"))
        put(store, range(100, 106))
        backlog = store.reader("kafka")
        backlog.done(backlog.take(2, 0))
        store.close()
        store = opened(stores, path, sinks=("relay",), max_bytes=8 * SIZE, when_full="drop_oldest")
        assert store.unconfigured()["kafka"].count == 4
        assert store.unconfigured()["kafka"].oldest_ns is not None
        assert put(store, range(106, 111)) == Stored({"relay": 3, "kafka": 1}, BUFFER_FULL)
        assert store.unconfigured()["kafka"].count == 3
        assert drain(store.reader("relay")) == list(range(103, 111))


class TestSlices:
    def test_rows_are_released_a_thousand_runs_at_a_time(self, stores, path):
        """Finishing 2,500 runs of one event releases them over three writes: 1,000, 1,000,
        then the last 500."""
        store = opened(stores, path, max_bytes=1 << 30)
        for n in range(2_500):
            put(store, range(n, n + 1))
        backlog = store.reader("kafka")
        while batch := backlog.take(1_000, 0):
            backlog.done(batch)
        left = []
        for n in range(2_500, 2_503):
            put(store, range(n, n + 1))
            left.append(stored_runs(path)[0][0])
        assert left == [1_001, 2_001, 2_501]


class TestReleaseBeforeRefusing:
    def test_rows_every_sink_finished_all_go_before_a_new_event_is_refused(self, stores, path):
        """The first slice released is not room enough: the rest is released in the same
        write, nothing new is dropped, and the bytes of both releases are counted free."""
        store = opened(stores, path, max_bytes=1_500 * SIZE)
        one = [numbered(100)]
        for _ in range(1_500):
            assert store.put([encode_envelope(one[0])], one) == Stored()
        drain(store.reader("kafka"), 1_000)
        many = [numbered(100 + n % 900) for n in range(1_200)]
        assert store.put([encode_envelope(e) for e in many], many) == Stored()
        assert stored_runs(path) == [(2_700, 1_200)]
        assert store.reader("kafka").waiting() == 1_200
        rest = [numbered(100)] * 300
        assert store.put([encode_envelope(e) for e in rest], rest) == Stored(), "bytes miscounted"
