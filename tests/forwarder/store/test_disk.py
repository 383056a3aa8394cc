"""The disk store keeps every event until each of its sinks finished it, across restarts and damage,
and serves a sink that keeps up from memory."""

from __future__ import annotations

import json
import random
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from emitter.contract import encode_envelope
from forwarder.store import BUFFER_FILE, DiskStore, discard, open_disk
from forwarder.store.base import Reader, Stored
from harness.events import numbered
from harness.processes import ROOT


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / BUFFER_FILE


@pytest.fixture
def opened(path: Path) -> Iterator[list[DiskStore]]:
    """Stores a test opened; each is closed at the end, whatever happened."""
    stores: list[DiskStore] = []
    yield stores
    for store in stores:
        if not store._tail.closed:
            store.close()


def open_store(opened: list[DiskStore], path: Path, sinks=("kafka",), **kwargs) -> DiskStore:
    kwargs.setdefault("max_bytes", 1 << 24)
    store, salvage = open_disk(path, sinks, **kwargs)
    assert salvage is None
    opened.append(store)
    return store


def put(store: DiskStore, numbers: range, **kwargs) -> Stored:
    envelopes = [numbered(n, **kwargs) for n in numbers]
    return store.put([encode_envelope(e) for e in envelopes], envelopes)


def numbers(ids: list[str]) -> list[int]:
    return [int(i.removeprefix("ev-")) for i in ids]


def drain(reader: Reader, limit: int = 500) -> list[int]:
    """Take and finish everything waiting, as a worker does."""
    taken: list[str] = []
    while batch := reader.take(limit, 0):
        taken.extend(e.id for e in batch.envelopes)
        reader.done(batch)
    return numbers(taken)


def rows(path: Path) -> int:
    with sqlite3.connect(path) as db:
        count: int = db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    db.close()
    return count


class TestDiskStore:
    def test_events_survive_reopen_until_finished(self, opened, path):
        """What a sink did not finish is taken again, in order, after a restart."""
        store = open_store(opened, path)
        put(store, range(10))
        reader = store.reader("kafka")
        reader.done(reader.take(4, 0))
        store.close()
        again = open_store(opened, path)
        assert drain(again.reader("kafka")) == list(range(4, 10))

    def test_each_sink_advances_on_its_own(self, opened, path):
        """A stalled sink neither holds back the other nor loses what it has not taken."""
        store = open_store(opened, path, sinks=("kafka", "socketio"))
        put(store, range(5))
        assert drain(store.reader("socketio")) == list(range(5))
        assert (store.reader("socketio").waiting(), store.reader("kafka").waiting()) == (0, 5)
        assert drain(store.reader("kafka")) == list(range(5))

    def test_rows_are_removed_once_every_sink_they_belong_to_finished(self, opened, path):
        store = open_store(opened, path, sinks=("a", "b"))
        put(store, range(3))
        put(store, range(3, 6))
        drain(store.reader("a"))
        b = store.reader("b")
        b.done(b.take(3, 0))
        store.close()
        assert rows(path) == 1
        assert drain(open_store(opened, path, sinks=("a", "b")).reader("b")) == [3, 4, 5]

    def test_a_long_backlog_is_released_a_slice_per_write(self, opened, path):
        """Removing what a sink finished never makes one write long: 8 MiB at most each time."""
        store = open_store(opened, path, max_bytes=1 << 30)
        for start in range(0, 6_000, 100):
            big = [
                msgspec.structs.replace(numbered(n), data={"pad": "x" * 2000})
                for n in range(start, start + 100)
            ]
            store.put([encode_envelope(e) for e in big], big)
        drain(store.reader("kafka"), 5_000)
        put(store, range(6_000, 6_001))
        left = rows(path)
        assert 2 < left < 61, "released all at once, or nothing"
        put(store, range(6_001, 6_002))
        assert rows(path) < left

    def test_a_sink_that_keeps_up_never_reads_the_file(self, opened, path):
        """Events just stored are handed out from memory, decoded once."""
        store = open_store(opened, path, sinks=("kafka", "socketio"))
        for start in range(0, 3_000, 100):
            put(store, range(start, start + 100))
            assert drain(store.reader("socketio"), 70)[-1] == start + 99
        assert store.reader("socketio").file_reads == 0
        assert drain(store.reader("kafka")) == list(range(3_000))
        assert store.reader("kafka").file_reads == 0

    def test_a_sink_far_behind_reads_the_file_and_misses_nothing(self, opened, path):
        """More than the memory tail holds: the rest comes from the file, in order, once each."""
        store = open_store(opened, path)
        for start in range(0, 30_000, 1_000):
            put(store, range(start, start + 1_000))
        reader = store.reader("kafka")
        assert drain(reader, 5_000) == list(range(30_000))
        assert reader.file_reads > 0
        assert reader.waiting() == 0

    def test_reads_are_paged(self, opened, path):
        """A sink never takes more than it asked for, whatever the reader."""
        store = open_store(opened, path)
        put(store, range(5_000))
        store.close()
        reader = open_store(opened, path).reader("kafka")
        assert len(reader.take(100, 0)) == 100
        assert [e.id for e in reader.take(1, 0).envelopes] == ["ev-000100"]

    def test_taking_waits_for_the_next_put_and_no_longer(self, opened, path):
        store = open_store(opened, path)
        reader = store.reader("kafka")
        assert not reader.take(10, 0.01)
        timer = threading.Timer(0.05, put, (store, range(1)))
        timer.start()
        try:
            assert len(reader.take(10, 30)) == 1
        finally:
            timer.join()

    def test_depth_and_oldest_age_are_answered_from_memory(self, opened, path):
        """No query per scrape: the answers stand even once the file is closed."""
        store = open_store(opened, path)
        reader = store.reader("kafka")
        assert (reader.waiting(), reader.oldest_age_s()) == (0, None)
        old = [numbered(n) for n in range(4)]
        store.put([encode_envelope(e) for e in old], old)
        put(store, range(4, 7))
        reader.done(reader.take(4, 0))
        store.close()
        age = reader.oldest_age_s()
        assert reader.waiting() == 3
        assert age is not None
        assert age >= 0

    def test_drop_newest_refuses_what_does_not_fit(self, opened, path):
        """When full, new events are dropped and reported; those stored are kept."""
        size = len(encode_envelope(numbered(0)))
        store = open_store(opened, path, max_bytes=5 * size, when_full="drop_newest")
        assert put(store, range(8)) == Stored({"kafka": 3}, "buffer_full")
        assert drain(store.reader("kafka")) == list(range(5))

    def test_drop_oldest_makes_room_and_counts_what_each_sink_had_not_finished(self, opened, path):
        """The oldest events give way; a sink that finished them loses nothing."""
        size = len(encode_envelope(numbered(0)))
        store = open_store(
            opened, path, sinks=("kafka", "socketio"), max_bytes=5 * size, when_full="drop_oldest"
        )
        put(store, range(5))
        drain(store.reader("socketio"))
        assert put(store, range(5, 7)) == Stored({"kafka": 2}, "buffer_full")
        assert drain(store.reader("kafka")) == list(range(2, 7))
        assert drain(store.reader("socketio")) == [5, 6]
        assert store.reader("kafka").waiting() == 0

    def test_drop_oldest_keeps_the_newest_of_one_oversized_put(self, opened, path):
        size = len(encode_envelope(numbered(0)))
        store = open_store(opened, path, max_bytes=5 * size, when_full="drop_oldest")
        assert put(store, range(8)) == Stored({"kafka": 3}, "buffer_full")
        assert drain(store.reader("kafka")) == list(range(3, 8))

    def test_positions_never_go_back_once_the_buffer_emptied(self, opened, path):
        """Events stored after a full drain are taken after a restart too."""
        store = open_store(opened, path)
        put(store, range(3))
        drain(store.reader("kafka"))
        store.close()
        assert rows(path) == 0
        again = open_store(opened, path)
        put(again, range(3, 5))
        again.close()
        assert drain(open_store(opened, path).reader("kafka")) == [3, 4]

    @pytest.mark.parametrize(("fsync", "synchronous"), [("always", 2), ("batch", 1), ("off", 0)])
    def test_fsync_mode_is_what_the_live_connection_has(self, opened, path, fsync, synchronous):
        """FORWARDER_FSYNC, read back as PRAGMA synchronous from the writer's connection."""
        assert open_store(opened, path, fsync=fsync).synchronous == synchronous


class TestModeSwitch:
    def test_a_sink_switched_off_keeps_its_events_and_gets_them_first_when_back(self, opened, path):
        """Events belong to the sinks configured when they were received, and to no other."""
        store = open_store(opened, path, sinks=("kafka",))
        put(store, range(200))
        store.close()
        store = open_store(opened, path, sinks=("socketio",))
        assert store.unconfigured()["kafka"].count == 200
        put(store, range(200, 250))
        assert drain(store.reader("socketio")) == list(range(200, 250))
        store.close()
        store = open_store(opened, path, sinks=("kafka",))
        assert store.unconfigured() == {}
        assert drain(store.reader("kafka")) == list(range(200))

    def test_discard_drops_what_a_sink_held_and_says_how_much(self, opened, path):
        store = open_store(opened, path, sinks=("kafka", "socketio"))
        put(store, range(20))
        drain(store.reader("socketio"))
        store.close()
        assert discard(path, "kafka") == 20
        assert discard(path, "kafka") == 0
        assert rows(path) == 0
        assert open_store(opened, path, sinks=("kafka",)).reader("kafka").waiting() == 0


class TestDamage:
    def fill(self, opened, path) -> int:
        """20,000 events stored as 200 runs of 100, nothing delivered; returns the count."""
        store = open_store(opened, path)
        for start in range(0, 20_000, 100):
            put(store, range(start, start + 100))
        store.close()
        for suffix in ("-wal", "-shm"):
            assert not Path(f"{path}{suffix}").exists()
        return 20_000

    def reopen(self, opened, path):
        store, salvage = open_disk(path, ["kafka"], max_bytes=1 << 30)
        opened.append(store)
        assert salvage is not None
        assert salvage.aside.exists()
        return store, salvage

    @pytest.mark.parametrize("damage", ["page overwritten mid-file", "truncated to half"])
    def test_every_intact_row_is_salvaged_and_the_loss_estimated(self, opened, path, damage):
        """Reading goes on past the damage: what was stored is salvaged or counted lost."""
        stored = self.fill(opened, path)
        size = path.stat().st_size
        with path.open("r+b") as file:
            if damage == "truncated to half":
                file.truncate(size // 2)
            else:
                file.seek(size // 2 // 4096 * 4096)
                file.write(random.Random(7).randbytes(4096))
        store, salvage = self.reopen(opened, path)
        delivered = drain(store.reader("kafka"), 5_000)
        assert delivered == sorted(set(delivered))
        assert set(delivered) <= set(range(stored))
        assert salvage.salvaged == len(delivered)
        assert salvage.salvaged + salvage.lost == stored
        if damage == "truncated to half":
            assert 0.4 * stored < salvage.salvaged < 0.6 * stored
        else:
            assert salvage.lost <= 800, "more lost than the runs one page can touch"
        put(store, range(stored, stored + 1))
        assert drain(store.reader("kafka")) == [stored]

    def test_a_file_that_is_no_database_is_set_aside_and_a_new_one_started(self, opened, path):
        path.write_bytes(b"not a database at all" * 200)
        store, salvage = self.reopen(opened, path)
        assert (salvage.salvaged, salvage.lost) == (0, 0)
        assert salvage.aside.read_bytes().startswith(b"not a database")
        put(store, range(3))
        assert drain(store.reader("kafka")) == [0, 1, 2]

    def test_a_run_that_no_longer_unpacks_is_reported_once_for_all_its_positions(
        self, opened, path
    ):
        """Damaged bytes inside a stored run: reported with its count, the rest delivered."""
        store = open_store(opened, path)
        put(store, range(2))
        put(store, range(2, 5))
        put(store, range(5, 7))
        store.close()
        with sqlite3.connect(path) as db:
            db.execute("UPDATE runs SET frames = x'c1c1' WHERE last_seq = 5")
        db.close()
        batch = open_store(opened, path).reader("kafka").take(10, 0)
        assert numbers([e.id for e in batch.envelopes]) == [0, 1, 5, 6]
        [damaged] = batch.damaged
        assert (damaged.frame, damaged.count) == (b"\xc1\xc1", 3)
        assert damaged.reason.startswith("unreadable in the buffer")
        assert len(batch) == 7

    def test_a_stored_frame_that_no_longer_decodes_is_reported_alone(self, opened, path):
        store = open_store(opened, path)
        good = [numbered(n) for n in range(2)]
        store.put([encode_envelope(good[0]), b"\xc1 no event", encode_envelope(good[1])], good)
        store.close()
        batch = open_store(opened, path).reader("kafka").take(10, 0)
        assert [e.id for e in batch.envelopes] == ["ev-000000", "ev-000001"]
        assert [d.frame for d in batch.damaged] == [b"\xc1 no event"]

    def test_a_file_of_another_layout_is_set_aside_not_misread(self, opened, path):
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE events (seq INTEGER PRIMARY KEY, frame BLOB)")
        db.close()
        _, salvage = self.reopen(opened, path)
        assert "another version" in salvage.reason


DISK_FULL = """
import json, os, resource, sys
from pathlib import Path
from emitter.contract import encode_envelope
from forwarder.store import open_disk
from harness.events import numbered

path = Path(sys.argv[1])
store, _ = open_disk(path, ["kafka"], max_bytes=1 << 30, queue_max=30)
statements = []
store._db.set_trace_callback(statements.append)
largest = max(os.path.getsize(f) for f in (path, Path(f"{path}-wal")) if f.exists())
resource.setrlimit(resource.RLIMIT_FSIZE, (largest, resource.RLIM_INFINITY))
report = {"failed": [], "dropped": 0}
for n in range(40):
    stored = store.put([encode_envelope(numbered(n))], [numbered(n)])
    if stored.error is not None:
        report["failed"].append([n, stored.error, stored.unwritten, statements[-1]])
    report["dropped"] += stored.dropped.get("kafka", 0)
    report["waiting"] = stored.unwritten
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
report["after"] = [store.maintain().error, store.maintain().unwritten]
report["taken"] = [e.id for e in store.reader("kafka").take(100, 0).envelopes]
store.close()
print(json.dumps(report))
"""


@pytest.mark.integration
class TestDiskFull:
    def test_a_failed_commit_keeps_events_in_memory_until_the_disk_takes_them(self, path):
        """A real full disk (RLIMIT_FSIZE, in a process of its own): the write fails at COMMIT,
        the events wait, the oldest past FORWARDER_QUEUE_MAX are dropped, the rest are stored
        in order once the disk takes them again."""
        result = subprocess.run(
            [sys.executable, "-c", DISK_FULL, str(path)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        report = json.loads(result.stdout)
        assert report["failed"], "the file limit never refused a write"
        first, error, waiting, statement = report["failed"][0]
        assert (waiting, statement) == (1, "COMMIT")
        assert error
        refused = 40 - first
        assert (report["waiting"], report["dropped"]) == (min(refused, 30), max(0, refused - 30))
        assert report["after"] == [None, 0]
        assert numbers(report["taken"]) == [*range(first), *range(max(first, 10), 40)]
