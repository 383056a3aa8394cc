"""A disk buffer in SQLite (WAL): one stored copy of each event and a read position per sink.

Events are written before any sink sees them and removed once every sink has acknowledged them, so
a broker outage or a restart of the forwarder loses nothing that was received.
"""

from __future__ import annotations

import itertools
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from forwarder.settings import FsyncMode, WhenFull

__all__ = ["Appended", "BufferReader", "DiskBuffer", "Stored", "describe"]

_SALVAGE_CHUNK: Final = 1000
_SYNCHRONOUS: Final = {"always": "FULL", "batch": "NORMAL", "off": "OFF"}
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    stored_at REAL NOT NULL,
    frame BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS cursors (
    sink TEXT PRIMARY KEY,
    acked INTEGER NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class Appended:
    """What `append` kept: `count` frames from index `start`, the first stored at `first_seq`;
    and per sink how many it lost to a full buffer."""

    lost: dict[str, int]
    first_seq: int
    start: int
    count: int


@dataclass(frozen=True, slots=True)
class Stored:
    """One buffered event as a reader sees it."""

    seq: int
    stored_at: float
    frame: bytes


class DiskBuffer:
    """The store: the receiving thread appends, each sink reads through its own reader."""

    def __init__(
        self,
        path: Path,
        sinks: Sequence[str],
        *,
        max_bytes: int,
        when_full: WhenFull = "drop_newest",
        fsync: FsyncMode = "batch",
        clock: Callable[[], float] = time.time,
        on_corrupt: Callable[[Path, str, int], None] | None = None,
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.when_full = when_full
        self._fsync = fsync
        self._clock = clock
        self._lock = threading.Lock()
        self._db = self._open_or_recover(on_corrupt)
        with self._db:
            self._db.executemany(
                "INSERT OR IGNORE INTO cursors (sink, acked) VALUES (?, 0)",
                [(name,) for name in sinks],
            )
        row = self._db.execute("SELECT COALESCE(SUM(length(frame)), 0) FROM events").fetchone()
        self._bytes: int = row[0]
        self._sinks = tuple(sinks)
        self.dropped_newest = 0
        self.dropped_oldest = 0
        self._closed = False

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={_SYNCHRONOUS[self._fsync]}")
        return db

    def _open_or_recover(
        self, on_corrupt: Callable[[Path, str, int], None] | None
    ) -> sqlite3.Connection:
        """A file that fails its check is set aside; what still reads from it is copied back."""
        try:
            db = self._connect()
            check = db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                db.close()
                raise sqlite3.DatabaseError(check)
            db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(self._clock())}")
            for suffix in ("", "-wal", "-shm"):
                damaged = Path(f"{self.path}{suffix}")
                if damaged.exists():
                    damaged.rename(Path(f"{aside}{suffix}"))
            db = self._connect()
            db.executescript(_SCHEMA)
            salvaged = _salvage(aside, db)
            if on_corrupt is not None:
                on_corrupt(aside, str(exc), salvaged)
        return db

    def append(self, frames: Sequence[bytes]) -> Appended:
        """Store frames in one transaction (group commit).

        When the buffer is full, drop_newest refuses the frames from the first that does not fit,
        drop_oldest deletes the oldest stored events (then, if need be, the oldest of `frames`).
        What is kept of `frames` is always one run of them, stored under consecutive positions.
        """
        now = self._clock()
        incoming = sum(map(len, frames))
        start, end = 0, len(frames)
        if self._bytes + incoming > self.max_bytes:
            start, end, incoming = self._fit(frames)
        lost = dict.fromkeys(self._sinks, len(frames) - (end - start))
        if start == end:
            return Appended(lost, 0, start, 0)
        with self._lock, self._db:
            if self.when_full == "drop_oldest":
                for sink, count in self._make_room(incoming).items():
                    lost[sink] += count
            self._db.executemany(
                "INSERT INTO events (stored_at, frame) VALUES (?, ?)",
                zip(itertools.repeat(now), frames[start:end]),
            )
            (last,) = self._db.execute(
                "SELECT seq FROM sqlite_sequence WHERE name = 'events'"
            ).fetchone()
            self._bytes += incoming
        return Appended(lost, last - (end - start) + 1, start, end - start)

    def _fit(self, frames: Sequence[bytes]) -> tuple[int, int, int]:
        """The run of `frames` the policy keeps when they do not all fit, and its size."""
        incoming = 0
        end = len(frames)
        for index, frame in enumerate(frames):
            if (
                self.when_full == "drop_newest"
                and self._bytes + incoming + len(frame) > self.max_bytes
            ):
                end = index
                break
            incoming += len(frame)
        start = 0
        if self.when_full == "drop_oldest":
            while start < end and incoming > self.max_bytes:
                incoming -= len(frames[start])
                start += 1
            self.dropped_oldest += start
        else:
            self.dropped_newest += len(frames) - end
        return start, end, incoming

    def _make_room(self, incoming: int) -> dict[str, int]:
        excess = self._bytes + incoming - self.max_bytes
        if excess <= 0:
            return {}
        freed = 0
        last = 0
        for seq, size in self._db.execute("SELECT seq, length(frame) FROM events ORDER BY seq"):
            if freed >= excess:
                break
            freed += size
            last = seq
        lost = {
            sink: self._db.execute(
                "SELECT COUNT(*) FROM events WHERE seq > ? AND seq <= ?", (self._acked(sink), last)
            ).fetchone()[0]
            for sink in self._sinks
        }
        deleted = self._db.execute("DELETE FROM events WHERE seq <= ?", (last,)).rowcount
        self._db.execute("UPDATE cursors SET acked = ? WHERE acked < ?", (last, last))
        self.dropped_oldest += deleted
        self._bytes -= freed
        return lost

    def reader(self, sink: str) -> BufferReader:
        """A reader for one sink, with its own position, safe to use from that sink's thread."""
        if sink not in self._sinks:
            raise KeyError(sink)
        return BufferReader(self, sink)

    def _acked(self, sink: str) -> int:
        row = self._db.execute("SELECT acked FROM cursors WHERE sink = ?", (sink,)).fetchone()
        return int(row[0])

    def _read_after(self, seq: int, limit: int) -> list[Stored]:
        with self._lock:
            if self._closed:
                return []
            rows = self._db.execute(
                "SELECT seq, stored_at, frame FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                (seq, limit),
            ).fetchall()
        return [Stored(s, t, bytes(f)) for s, t, f in rows]

    def _ack(self, sink: str, seq: int) -> None:
        """Move the sink's position; after close (a worker outliving the drain) it stays put."""
        with self._lock:
            if self._closed:
                return
            self._ack_locked(sink, seq)

    def _ack_locked(self, sink: str, seq: int) -> None:
        with self._db:
            self._db.execute(
                "UPDATE cursors SET acked = ? WHERE sink = ? AND acked < ?", (seq, sink, seq)
            )
            floor = self._db.execute("SELECT MIN(acked) FROM cursors").fetchone()[0]
            freed = self._db.execute(
                "SELECT COALESCE(SUM(length(frame)), 0) FROM events WHERE seq <= ?", (floor,)
            ).fetchone()[0]
            if freed:
                self._db.execute("DELETE FROM events WHERE seq <= ?", (floor,))
                self._bytes -= freed

    def backlog(self, sink: str) -> tuple[int, float | None]:
        """Events this sink has not acknowledged, and the time the oldest of them was stored."""
        with self._lock:
            if self._closed:
                return 0, None
            acked = self._acked(sink)
            row = self._db.execute(
                "SELECT seq, stored_at FROM events WHERE seq > ? ORDER BY seq LIMIT 1", (acked,)
            ).fetchone()
            if row is None:
                return 0, None
            (newest,) = self._db.execute("SELECT MAX(seq) FROM events").fetchone()
        return newest - row[0] + 1, row[1]

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._db.close()


def _salvage(damaged: Path, into: sqlite3.Connection) -> int:
    """Copy the events a damaged file still yields, oldest first, until the first bad page."""
    salvaged = 0
    try:
        old = sqlite3.connect(f"file:{damaged}?mode=ro", uri=True)
    except sqlite3.Error:
        return 0
    try:
        try:
            floor = old.execute("SELECT MIN(acked) FROM cursors").fetchone()[0] or 0
        except sqlite3.Error:
            floor = 0
        rows = old.execute(
            "SELECT stored_at, frame FROM events WHERE seq > ? ORDER BY seq", (floor,)
        )
        while chunk := rows.fetchmany(_SALVAGE_CHUNK):
            with into:
                into.executemany("INSERT INTO events (stored_at, frame) VALUES (?, ?)", chunk)
            salvaged += len(chunk)
    except sqlite3.Error:
        pass
    finally:
        old.close()
    return salvaged


class BufferReader:
    """One sink's view: reads move ahead in memory, acknowledgements move the stored position."""

    def __init__(self, buffer: DiskBuffer, sink: str) -> None:
        self._buffer = buffer
        self.sink = sink
        with buffer._lock:
            self._position = buffer._acked(sink)

    @property
    def position(self) -> int:
        """The last position handed out."""
        return self._position

    def skip_to(self, seq: int) -> None:
        """Events up to `seq` were handed out from memory: read after them from now on."""
        self._position = max(self._position, seq)

    def read(self, limit: int) -> list[Stored]:
        """The next events after what this reader already handed out, oldest first."""
        events = self._buffer._read_after(self._position, limit)
        if events:
            self._position = events[-1].seq
        return events

    def ack(self, seq: int) -> None:
        """Everything up to `seq` is done for this sink (delivered or dead-lettered)."""
        self._buffer._ack(self.sink, seq)


def describe(path: Path, max_bytes: int) -> str:
    """What the buffer holds, for `check`: read-only, so a running forwarder is not disturbed."""
    if not path.exists():
        return f"{path} (created at start), up to {max_bytes:,} bytes"
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        count, size = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(length(frame)), 0) FROM events"
        ).fetchone()
    except sqlite3.DatabaseError as exc:
        raise RuntimeError(f"{path} is damaged ({exc}): it will be set aside at start") from exc
    finally:
        db.close()
    return f"{path}: {count:,} events held, {size:,} of {max_bytes:,} bytes"
