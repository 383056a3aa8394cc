"""The disk buffer keeps every event until each sink acknowledged it, across restarts and damage."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from forwarder.buffer import DiskBuffer, describe


def frames(start: int, count: int, size: int = 20) -> list[bytes]:
    return [f"{i:0{size}d}".encode() for i in range(start, start + count)]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "buffer.sqlite"


class TestDiskBuffer:
    def test_events_survive_reopen_until_acknowledged(self, path: Path):
        """What a sink did not acknowledge is read again, in order, after a restart."""
        buffer = DiskBuffer(path, ["kafka"], max_bytes=1 << 20)
        buffer.append(frames(0, 10))
        reader = buffer.reader("kafka")
        first = reader.read(4)
        reader.ack(first.last_seq)
        buffer.close()

        reopened = DiskBuffer(path, ["kafka"], max_bytes=1 << 20)
        assert reopened.reader("kafka").read(100).frames == frames(4, 6)
        reopened.close()

    def test_each_sink_advances_on_its_own(self, path: Path):
        """A stalled sink neither holds back the other nor loses what it has not read."""
        buffer = DiskBuffer(path, ["kafka", "socketio"], max_bytes=1 << 20)
        buffer.append(frames(0, 5))
        fast = buffer.reader("socketio")
        fast.ack(fast.read(100).last_seq)
        assert buffer.backlog("socketio")[0] == 0
        assert buffer.backlog("kafka")[0] == 5
        assert buffer.reader("kafka").read(100).frames == frames(0, 5)
        buffer.close()

    def test_rows_are_removed_once_every_sink_acknowledged(self, path: Path):
        """Storage is reclaimed only when the slowest sink has caught up."""
        buffer = DiskBuffer(path, ["a", "b"], max_bytes=1 << 20)
        buffer.append(frames(0, 3))
        a, b = buffer.reader("a"), buffer.reader("b")
        a.ack(a.read(10).last_seq)
        assert buffer.size_bytes == 60
        b.ack(b.read(10).last_seq)
        assert buffer.size_bytes == 0
        buffer.close()

    def test_reads_are_paged(self, path: Path):
        """A reader never pulls more than it asked for, whatever the backlog."""
        buffer = DiskBuffer(path, ["kafka"], max_bytes=1 << 24)
        buffer.append(frames(0, 5000))
        reader = buffer.reader("kafka")
        assert len(reader.read(100).frames) == 100
        assert reader.read(1).frames == frames(100, 1)
        buffer.close()

    def test_drop_newest_refuses_what_does_not_fit(self, path: Path):
        """When full, new events are counted as dropped and the stored ones kept."""
        buffer = DiskBuffer(path, ["kafka"], max_bytes=100, when_full="drop_newest")
        assert buffer.append(frames(0, 8)).lost == {"kafka": 3}
        assert buffer.dropped_newest == 3
        assert buffer.reader("kafka").read(10).frames == frames(0, 5)
        buffer.close()

    def test_drop_oldest_makes_room(self, path: Path):
        """When full, the oldest events give way and are counted."""
        buffer = DiskBuffer(path, ["kafka"], max_bytes=100, when_full="drop_oldest")
        buffer.append(frames(0, 5))
        assert buffer.append(frames(5, 2)).lost == {"kafka": 2}
        assert buffer.dropped_oldest == 2
        assert buffer.reader("kafka").read(10).frames == frames(2, 5)
        assert buffer.size_bytes <= 100
        buffer.close()

    def test_drop_oldest_keeps_the_newest_of_one_oversized_append(self, path: Path):
        buffer = DiskBuffer(path, ["kafka"], max_bytes=100, when_full="drop_oldest")
        assert buffer.append(frames(0, 8)).lost == {"kafka": 3}
        assert buffer.reader("kafka").read(10).frames == frames(3, 5)
        buffer.close()

    def test_drop_oldest_counts_only_what_each_sink_had_not_finished(self, path: Path):
        """A sink that already delivered the oldest events loses nothing when they give way."""
        buffer = DiskBuffer(path, ["kafka", "socketio"], max_bytes=100, when_full="drop_oldest")
        buffer.append(frames(0, 5))
        fast = buffer.reader("socketio")
        fast.ack(fast.read(10).last_seq)
        assert buffer.append(frames(5, 2)).lost == {"kafka": 2, "socketio": 0}
        assert fast.read(10).frames == frames(5, 2)
        buffer.close()

    def test_positions_never_go_back_once_the_buffer_emptied(self, path: Path):
        """Events stored after a full drain are read, after a restart too: positions only grow."""
        buffer = DiskBuffer(path, ["kafka"], max_bytes=1 << 20)
        buffer.append(frames(0, 3))
        reader = buffer.reader("kafka")
        reader.ack(reader.read(10).last_seq)
        assert buffer.size_bytes == 0
        buffer.close()
        reopened = DiskBuffer(path, ["kafka"], max_bytes=1 << 20)
        reopened.append(frames(3, 2))
        assert reopened.reader("kafka").read(10).frames == frames(3, 2)
        reopened.close()

    def test_backlog_counts_and_dates_what_a_sink_has_not_finished(self, path: Path):
        now = [1000.0]
        buffer = DiskBuffer(path, ["kafka"], max_bytes=1 << 20, clock=lambda: now[0])
        assert buffer.backlog("kafka") == (0, None)
        buffer.append(frames(0, 4))
        now[0] = 1005.0
        buffer.append(frames(4, 3))
        reader = buffer.reader("kafka")
        reader.ack(reader.read(4).last_seq)
        assert buffer.backlog("kafka") == (3, 1005.0)
        buffer.close()

    @pytest.mark.parametrize("damage", ["garbage", "truncated", "torn page"])
    def test_damaged_file_is_set_aside_and_what_still_reads_is_kept(self, path: Path, damage: str):
        """A corrupted or torn file does not stop the start: it is moved aside and reported, and
        the events before the damage are delivered (SQLite cannot read past a cut file)."""
        buffer = DiskBuffer(path, ["kafka"], max_bytes=1 << 20)
        for start in range(0, 2000, 100):
            buffer.append(frames(start, 100, size=200))
        buffer.close()
        for suffix in ("-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        size = path.stat().st_size
        with path.open("r+b") as f:
            if damage == "garbage":
                f.write(os.urandom(4096))
            elif damage == "truncated":
                f.truncate(size // 3)
            else:
                f.seek(size * 2 // 3 // 4096 * 4096)
                f.write(os.urandom(4096))
        reports: list[tuple[Path, str, int]] = []
        reopened = DiskBuffer(
            path, ["kafka"], max_bytes=1 << 20, on_corrupt=lambda *report: reports.append(report)
        )
        [(aside, reason, salvaged)] = reports
        assert aside.exists()
        assert reason
        stored = reopened.reader("kafka").read(5000).frames
        assert len(stored) == salvaged
        assert stored == frames(0, salvaged, size=200)
        if damage == "torn page":
            assert 0 < salvaged < 2000
        reopened.append(frames(2000, 1, size=200))
        assert reopened.reader("kafka").read(5000).frames[-1] == frames(2000, 1, size=200)[0]
        reopened.close()

    def test_a_sink_no_longer_configured_holds_nothing_back(self, path: Path):
        """Dropping a sink from ORDER_EVENT_MODE frees the events only it had not read."""
        buffer = DiskBuffer(path, ["kafka", "socketio"], max_bytes=1 << 20)
        buffer.append(frames(0, 5))
        buffer.close()
        reopened = DiskBuffer(path, ["kafka"], max_bytes=1 << 20)
        reader = reopened.reader("kafka")
        reader.ack(reader.read(10).last_seq)
        assert reopened.size_bytes == 0
        reopened.append(frames(5, 1))
        assert reopened.backlog("kafka")[0] == 1
        reopened.close()

    def test_a_run_that_no_longer_unpacks_keeps_one_frame_per_position(self, path: Path):
        """Damaged bytes inside a stored run: its raw bytes and empty frames, never a skip."""
        buffer = DiskBuffer(path, ["kafka"], max_bytes=1 << 20)
        buffer.append(frames(0, 2))
        buffer.append(frames(2, 3))
        buffer.append(frames(5, 2))
        buffer.close()
        with sqlite3.connect(path) as db:
            db.execute("UPDATE runs SET frames = x'c1c1' WHERE last_seq = 5")
        db.close()
        reopened = DiskBuffer(path, ["kafka"], max_bytes=1 << 20)
        run = reopened.reader("kafka").read(10)
        assert (run.first_seq, run.frames) == (
            1,
            [*frames(0, 2), b"\xc1\xc1", b"", b"", *frames(5, 2)],
        )
        reopened.close()


class TestUpgrade:
    def test_a_buffer_stored_one_row_per_event_is_delivered_in_order(self, path: Path):
        """A file written before events were stored in runs keeps what no sink had finished."""
        with sqlite3.connect(path) as db:
            db.executescript(
                """
                CREATE TABLE events (
                    seq INTEGER PRIMARY KEY AUTOINCREMENT,
                    stored_at REAL NOT NULL,
                    frame BLOB NOT NULL
                );
                CREATE TABLE cursors (sink TEXT PRIMARY KEY, acked INTEGER NOT NULL);
                """
            )
            db.executemany(
                "INSERT INTO events (stored_at, frame) VALUES (?, ?)",
                [(1000.0, frame) for frame in frames(0, 2500)],
            )
            db.executemany(
                "INSERT INTO cursors VALUES (?, ?)", [("kafka", 1200), ("socketio", 2500)]
            )
        db.close()
        buffer = DiskBuffer(path, ["kafka", "socketio"], max_bytes=1 << 24)
        assert buffer.backlog("kafka") == (1300, 1000.0)
        assert buffer.reader("kafka").read(5000).frames == frames(1200, 1300)
        assert buffer.backlog("socketio") == (0, None)
        buffer.append(frames(2500, 1))
        assert buffer.reader("kafka").read(5000).frames[-1] == frames(2500, 1)[0]
        buffer.close()


class TestDescribe:
    def test_counts_what_some_sink_has_not_finished(self, path: Path):
        """`check` reports the events still held, not those every sink finished."""
        assert describe(path, 1 << 20) == f"{path} (created at start), up to 1,048,576 bytes"
        buffer = DiskBuffer(path, ["kafka", "socketio"], max_bytes=1 << 20)
        buffer.append(frames(0, 10))
        for sink in ("kafka", "socketio"):
            reader = buffer.reader(sink)
            reader.ack(reader.read(4).last_seq)
        reader.ack(reader.read(2).last_seq)
        assert describe(path, 1 << 20) == f"{path}: 6 events held, 200 of 1,048,576 bytes"
        buffer.close()
