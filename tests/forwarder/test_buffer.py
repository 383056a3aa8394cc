"""The disk buffer keeps every event until each sink acknowledged it, across restarts and damage."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from forwarder.buffer import DiskBuffer


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
        reader.ack(first[-1].seq)
        buffer.close()

        reopened = DiskBuffer(path, ["kafka"], max_bytes=1 << 20)
        again = reopened.reader("kafka").read(100)
        assert [e.frame for e in again] == frames(4, 6)
        reopened.close()

    def test_each_sink_advances_on_its_own(self, path: Path):
        """A stalled sink neither holds back the other nor loses what it has not read."""
        buffer = DiskBuffer(path, ["kafka", "socketio"], max_bytes=1 << 20)
        buffer.append(frames(0, 5))
        fast = buffer.reader("socketio")
        fast.ack(fast.read(100)[-1].seq)
        assert buffer.backlog("socketio")[0] == 0
        assert buffer.backlog("kafka")[0] == 5
        assert [e.frame for e in buffer.reader("kafka").read(100)] == frames(0, 5)
        buffer.close()

    def test_rows_are_removed_once_every_sink_acknowledged(self, path: Path):
        """Storage is reclaimed only when the slowest sink has caught up."""
        buffer = DiskBuffer(path, ["a", "b"], max_bytes=1 << 20)
        buffer.append(frames(0, 3))
        a, b = buffer.reader("a"), buffer.reader("b")
        a.ack(a.read(10)[-1].seq)
        assert buffer.size_bytes == 60
        b.ack(b.read(10)[-1].seq)
        assert buffer.size_bytes == 0
        buffer.close()

    def test_reads_are_paged(self, path: Path):
        """A reader never pulls more than it asked for, whatever the backlog."""
        buffer = DiskBuffer(path, ["kafka"], max_bytes=1 << 24)
        buffer.append(frames(0, 5000))
        reader = buffer.reader("kafka")
        assert len(reader.read(100)) == 100
        assert reader.read(1)[0].frame == frames(100, 1)[0]
        buffer.close()

    def test_drop_newest_refuses_what_does_not_fit(self, path: Path):
        """When full, new events are counted as dropped and the stored ones kept."""
        buffer = DiskBuffer(path, ["kafka"], max_bytes=100, when_full="drop_newest")
        assert buffer.append(frames(0, 8)) == 5
        assert buffer.dropped_newest == 3
        assert [e.frame for e in buffer.reader("kafka").read(10)] == frames(0, 5)
        buffer.close()

    def test_drop_oldest_makes_room(self, path: Path):
        """When full, the oldest events give way and are counted."""
        buffer = DiskBuffer(path, ["kafka"], max_bytes=100, when_full="drop_oldest")
        buffer.append(frames(0, 5))
        buffer.append(frames(5, 2))
        assert buffer.dropped_oldest == 2
        assert [e.frame for e in buffer.reader("kafka").read(10)] == frames(2, 5)
        assert buffer.size_bytes <= 100
        buffer.close()

    @pytest.mark.parametrize("damage", ["garbage", "truncated"])
    def test_damaged_file_is_set_aside(self, path: Path, damage: str):
        """A corrupted or torn file does not stop the start: it is moved aside and reported."""
        buffer = DiskBuffer(path, ["kafka"], max_bytes=1 << 20)
        buffer.append(frames(0, 2000, size=200))
        buffer.close()
        for suffix in ("-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        size = path.stat().st_size
        with path.open("r+b") as f:
            if damage == "garbage":
                f.seek(0)
                f.write(os.urandom(4096))
            else:
                f.truncate(size // 3)
        reports: list[tuple[Path, str]] = []
        reopened = DiskBuffer(
            path, ["kafka"], max_bytes=1 << 20, on_corrupt=lambda p, r: reports.append((p, r))
        )
        assert len(reports) == 1
        assert reports[0][0].exists()
        reopened.append(frames(0, 1))
        assert len(reopened.reader("kafka").read(10)) == 1
        reopened.close()
