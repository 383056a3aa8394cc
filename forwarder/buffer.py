"""A disk buffer in SQLite (WAL): one stored copy of each event and a read position per sink.

Events are written before any sink sees them and removed once every sink has acknowledged them, so
a broker outage or a restart of the forwarder loses nothing that was received.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

__all__ = ["BufferReader", "DiskBuffer", "FsyncMode", "Stored", "WhenFull"]

FsyncMode = Literal["always", "batch", "off"]
WhenFull = Literal["drop_newest", "drop_oldest"]

_SYNCHRONOUS: Final = {"always": "FULL", "batch": "NORMAL", "off": "OFF"}
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    stored_at REAL NOT NULL,
    frame BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS cursors (
    sink TEXT PRIMARY KEY,
    acked INTEGER NOT NULL
);
"""


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
        on_corrupt: Callable[[Path, str], None] | None = None,
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

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={_SYNCHRONOUS[self._fsync]}")
        return db

    def _open_or_recover(
        self, on_corrupt: Callable[[Path, str], None] | None
    ) -> sqlite3.Connection:
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
            if on_corrupt is not None:
                on_corrupt(aside, str(exc))
            db = self._connect()
            db.executescript(_SCHEMA)
        return db

    def append(self, frames: Iterable[bytes]) -> int:
        """Store frames in one transaction (group commit); returns how many were kept."""
        now = self._clock()
        rows: list[tuple[float, bytes]] = []
        incoming = 0
        for frame in frames:
            if (
                self.when_full == "drop_newest"
                and self._bytes + incoming + len(frame) > self.max_bytes
            ):
                self.dropped_newest += 1
                continue
            rows.append((now, frame))
            incoming += len(frame)
        if not rows:
            return 0
        with self._lock, self._db:
            if self.when_full == "drop_oldest":
                self._make_room(incoming)
            self._db.executemany("INSERT INTO events (stored_at, frame) VALUES (?, ?)", rows)
            self._bytes += incoming
        return len(rows)

    def _make_room(self, incoming: int) -> None:
        excess = self._bytes + incoming - self.max_bytes
        if excess <= 0:
            return
        freed = 0
        last = 0
        for seq, size in self._db.execute("SELECT seq, length(frame) FROM events ORDER BY seq"):
            if freed >= excess:
                break
            freed += size
            last = seq
        deleted = self._db.execute("DELETE FROM events WHERE seq <= ?", (last,)).rowcount
        self._db.execute("UPDATE cursors SET acked = ? WHERE acked < ?", (last, last))
        self.dropped_oldest += deleted
        self._bytes -= freed

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
            rows = self._db.execute(
                "SELECT seq, stored_at, frame FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                (seq, limit),
            ).fetchall()
        return [Stored(s, t, bytes(f)) for s, t, f in rows]

    def _ack(self, sink: str, seq: int) -> None:
        with self._lock, self._db:
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
            acked = self._acked(sink)
            count, oldest = self._db.execute(
                "SELECT COUNT(*), MIN(stored_at) FROM events WHERE seq > ?", (acked,)
            ).fetchone()
        return int(count), oldest

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def close(self) -> None:
        with self._lock:
            self._db.close()


class BufferReader:
    """One sink's view: reads move ahead in memory, acknowledgements move the stored position."""

    def __init__(self, buffer: DiskBuffer, sink: str) -> None:
        self._buffer = buffer
        self.sink = sink
        with buffer._lock:
            self._position = buffer._acked(sink)

    def read(self, limit: int) -> list[Stored]:
        """The next events after what this reader already handed out, oldest first."""
        events = self._buffer._read_after(self._position, limit)
        if events:
            self._position = events[-1].seq
        return events

    def ack(self, seq: int) -> None:
        """Everything up to `seq` is done for this sink (delivered or dead-lettered)."""
        self._buffer._ack(self.sink, seq)
