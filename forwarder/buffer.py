"""A disk buffer in SQLite (WAL): one stored copy of each event and a read position per sink.

Events are written before any sink sees them and removed once every sink has acknowledged them, so
a broker outage or a restart of the forwarder loses nothing that was received. Each event has a
position; the events received together are stored as one row (a run of consecutive positions),
which keeps the cost of storing an event far below the cost of delivering it.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import msgspec

from forwarder.settings import FsyncMode, WhenFull

__all__ = ["Appended", "BufferReader", "DiskBuffer", "Run", "describe"]

_SALVAGE_CHUNK: Final = 1000
_SYNCHRONOUS: Final = {"always": "FULL", "batch": "NORMAL", "off": "OFF"}
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS runs (
    last_seq INTEGER PRIMARY KEY,
    count INTEGER NOT NULL,
    size INTEGER NOT NULL,
    stored_at REAL NOT NULL,
    frames BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS cursors (
    sink TEXT PRIMARY KEY,
    acked INTEGER NOT NULL
);
"""
"""A run holds `count` frames (msgpack array) at positions last_seq - count + 1 .. last_seq;
`size` is the frames' bytes. A cursor is the last position a sink finished."""
_pack: Final = msgspec.msgpack.Encoder().encode
_unpack: Final = msgspec.msgpack.Decoder(list[bytes]).decode


@dataclass(frozen=True, slots=True)
class Appended:
    """What `append` kept: `count` frames from index `start`, the first stored at `first_seq`;
    and per sink how many it lost to a full buffer."""

    lost: dict[str, int]
    first_seq: int
    start: int
    count: int


@dataclass(frozen=True, slots=True)
class Run:
    """Stored events at consecutive positions from `first_seq`, as a reader gets them."""

    first_seq: int
    frames: list[bytes]

    @property
    def last_seq(self) -> int:
        return self.first_seq + len(self.frames) - 1


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
        self._sinks = tuple(sinks)
        self._last = 0
        self._db = self._open_or_recover(on_corrupt)
        with self._db:
            # A sink no longer configured would hold every event in the buffer for ever.
            stale = {row[0] for row in self._db.execute("SELECT sink FROM cursors")} - set(sinks)
            self._db.executemany("DELETE FROM cursors WHERE sink = ?", [(n,) for n in stale])
            self._db.executemany(
                "INSERT OR IGNORE INTO cursors (sink, acked) VALUES (?, 0)",
                [(name,) for name in sinks],
            )
        self._bytes: int = self._db.execute("SELECT COALESCE(SUM(size), 0) FROM runs").fetchone()[0]
        self._last = self._db.execute(
            "SELECT MAX(COALESCE((SELECT MAX(last_seq) FROM runs), 0),"
            " COALESCE((SELECT MAX(acked) FROM cursors), 0))"
        ).fetchone()[0]
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
            if _has_table(db, "events"):
                self._upgrade(db)
        except sqlite3.DatabaseError as exc:
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(self._clock())}")
            for suffix in ("", "-wal", "-shm"):
                damaged = Path(f"{self.path}{suffix}")
                if damaged.exists():
                    damaged.rename(Path(f"{aside}{suffix}"))
            db = self._connect()
            db.executescript(_SCHEMA)
            salvaged = self._salvage(aside, db)
            if on_corrupt is not None:
                on_corrupt(aside, str(exc), salvaged)
        return db

    def _upgrade(self, db: sqlite3.Connection) -> None:
        """A buffer written one row per event (before runs) keeps what it held, in order."""
        with db:
            floor = _floor(db)
            for stored_at, frames in _held_runs(db):
                self._insert(db, frames, sum(map(len, frames)), stored_at)
            db.execute("DROP TABLE events")
            # Positions restart at 1 for the first event held; each sink keeps its progress.
            db.execute("UPDATE cursors SET acked = MAX(acked - ?, 0)", (floor,))

    def _salvage(self, damaged: Path, into: sqlite3.Connection) -> int:
        """Copy the events a damaged file still yields, oldest first, until the first bad page."""
        salvaged = 0
        try:
            old = sqlite3.connect(f"file:{damaged}?mode=ro", uri=True)
        except sqlite3.Error:
            return 0
        try:
            for stored_at, frames in _held_runs(old):
                with into:
                    self._insert(into, frames, sum(map(len, frames)), stored_at)
                salvaged += len(frames)
        except (sqlite3.Error, msgspec.DecodeError):
            pass
        finally:
            old.close()
        return salvaged

    def _insert(
        self, db: sqlite3.Connection, frames: list[bytes], size: int, stored_at: float
    ) -> int:
        """Store `frames` at the next positions; returns the first. Call inside a transaction."""
        first = self._last + 1
        db.execute(
            "INSERT INTO runs (last_seq, count, size, stored_at, frames) VALUES (?, ?, ?, ?, ?)",
            (self._last + len(frames), len(frames), size, stored_at, _pack(frames)),
        )
        self._last += len(frames)
        return first

    def append(self, frames: Sequence[bytes]) -> Appended:
        """Store frames in one transaction (group commit), as one run.

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
        with self._lock:
            last = self._last
            try:
                with self._db:
                    freed = 0
                    if self.when_full == "drop_oldest":
                        freed = self._make_room(incoming, lost)
                    first = self._insert(self._db, list(frames[start:end]), incoming, now)
            except BaseException:
                self._last = last
                raise
            self._bytes += incoming - freed
        return Appended(lost, first, start, end - start)

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

    def _make_room(self, incoming: int, lost: dict[str, int]) -> int:
        """Delete the oldest events until `incoming` bytes fit; adds to `lost` what each sink had
        not finished; returns the bytes freed. Call inside a transaction."""
        excess = self._bytes + incoming - self.max_bytes
        first_held = self._db.execute("SELECT MIN(last_seq - count + 1) FROM runs").fetchone()[0]
        freed = 0
        upto = 0
        while freed < excess:
            row = self._db.execute(
                "SELECT last_seq, count, size, frames FROM runs ORDER BY last_seq LIMIT 1"
            ).fetchone()
            if row is None:
                break
            last_seq, count, size, blob = row
            if freed + size <= excess:
                self._db.execute("DELETE FROM runs WHERE last_seq = ?", (last_seq,))
                freed += size
                upto = last_seq
                continue
            frames = _frames(blob, count)
            dropped = 0
            while freed < excess and dropped < len(frames):
                freed += len(frames[dropped])
                dropped += 1
            rest = frames[dropped:]
            self._db.execute(
                "UPDATE runs SET count = ?, size = ?, frames = ? WHERE last_seq = ?",
                (len(rest), sum(map(len, rest)), _pack(rest), last_seq),
            )
            upto = last_seq - count + dropped
        if upto:
            for sink, acked in self._db.execute("SELECT sink, acked FROM cursors").fetchall():
                lost[sink] += max(0, upto - max(acked, first_held - 1))
            self._db.execute("UPDATE cursors SET acked = ? WHERE acked < ?", (upto, upto))
            self.dropped_oldest += upto - first_held + 1
        return freed

    def reader(self, sink: str) -> BufferReader:
        """A reader for one sink, with its own position, safe to use from that sink's thread."""
        if sink not in self._sinks:
            raise KeyError(sink)
        return BufferReader(self, sink)

    def _acked(self, sink: str) -> int:
        row = self._db.execute("SELECT acked FROM cursors WHERE sink = ?", (sink,)).fetchone()
        return int(row[0])

    def _read_after(self, seq: int, limit: int) -> Run:
        """Up to `limit` events after position `seq`, from as many runs as that takes."""
        frames: list[bytes] = []
        first = 0
        with self._lock:
            if self._closed:
                return Run(0, frames)
            rows = self._db.execute(
                "SELECT last_seq, count, frames FROM runs WHERE last_seq > ? ORDER BY last_seq",
                (seq,),
            )
            for last_seq, count, blob in rows:
                run_first = last_seq - count + 1
                skip = max(0, seq + 1 - run_first)
                if not frames:
                    first = run_first + skip
                frames.extend(_frames(blob, count)[skip : skip + limit - len(frames)])
                if len(frames) >= limit:
                    break
            rows.close()
        return Run(first, frames)

    def _ack(self, sink: str, seq: int) -> None:
        """Move the sink's position; after close (a worker outliving the drain) it stays put."""
        with self._lock:
            if self._closed:
                return
            with self._db:
                self._db.execute(
                    "UPDATE cursors SET acked = ? WHERE sink = ? AND acked < ?", (seq, sink, seq)
                )
                floor = self._db.execute("SELECT MIN(acked) FROM cursors").fetchone()[0]
                freed = self._db.execute(
                    "SELECT COALESCE(SUM(size), 0) FROM runs WHERE last_seq <= ?", (floor,)
                ).fetchone()[0]
                if freed:
                    self._db.execute("DELETE FROM runs WHERE last_seq <= ?", (floor,))
            self._bytes -= freed

    def backlog(self, sink: str) -> tuple[int, float | None]:
        """Events this sink has not acknowledged, and the time the oldest of them was stored."""
        with self._lock:
            if self._closed:
                return 0, None
            acked = self._acked(sink)
            row = self._db.execute(
                "SELECT last_seq - count + 1, stored_at FROM runs WHERE last_seq > ?"
                " ORDER BY last_seq LIMIT 1",
                (acked,),
            ).fetchone()
            if row is None:
                return 0, None
            return self._last - max(acked, row[0] - 1), row[1]

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._db.close()


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

    def read(self, limit: int) -> Run:
        """The next events after what this reader already handed out, oldest first."""
        run = self._buffer._read_after(self._position, limit)
        if run.frames:
            self._position = run.last_seq
        return run

    def ack(self, seq: int) -> None:
        """Everything up to `seq` is done for this sink (delivered or dead-lettered)."""
        self._buffer._ack(self.sink, seq)


def _frames(blob: bytes, count: int) -> list[bytes]:
    """A run's frames; one whose bytes no longer unpack gives them as its first frame and empty
    ones for the rest, so each of its positions is dead-lettered and counted, none skipped."""
    try:
        return _unpack(blob)
    except msgspec.DecodeError:
        return [bytes(blob), *[b""] * (count - 1)]


def _has_table(db: sqlite3.Connection, name: str) -> bool:
    query = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
    return db.execute(query, (name,)).fetchone() is not None


def _floor(db: sqlite3.Connection) -> int:
    """The last position every sink finished (0 when the cursors cannot be read)."""
    try:
        return int(db.execute("SELECT MIN(acked) FROM cursors").fetchone()[0] or 0)
    except sqlite3.Error:
        return 0


def _held_runs(db: sqlite3.Connection) -> Iterator[tuple[float, list[bytes]]]:
    """What a buffer file holds that some sink has not finished, oldest first, as runs with their
    storage time; reads both this layout and the one-row-per-event layout before it."""
    floor = _floor(db)
    if _has_table(db, "events"):
        rows = db.execute(
            "SELECT stored_at, frame FROM events WHERE seq > ? ORDER BY seq", (floor,)
        )
        while chunk := rows.fetchmany(_SALVAGE_CHUNK):
            yield chunk[0][0], [bytes(frame) for _, frame in chunk]
        return
    runs = db.execute(
        "SELECT last_seq, count, stored_at, frames FROM runs WHERE last_seq > ? ORDER BY last_seq",
        (floor,),
    )
    for last_seq, count, stored_at, blob in runs:
        skip = max(0, floor + 1 - (last_seq - count + 1))
        yield stored_at, _unpack(blob)[skip:]


def describe(path: Path, max_bytes: int) -> str:
    """What the buffer holds, for `check`: read-only, so a running forwarder is not disturbed."""
    if not path.exists():
        return f"{path} (created at start), up to {max_bytes:,} bytes"
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        if _has_table(db, "events"):
            count, size = db.execute(
                "SELECT COUNT(*), COALESCE(SUM(length(frame)), 0) FROM events"
            ).fetchone()
        else:
            count, size, first = db.execute(
                "SELECT COALESCE(SUM(count), 0), COALESCE(SUM(size), 0),"
                " MIN(last_seq - count + 1) FROM runs"
            ).fetchone()
            if first is not None:  # the front of the oldest run may be finished by every sink
                count -= max(0, _floor(db) - first + 1)
    except sqlite3.DatabaseError as exc:
        raise RuntimeError(f"{path} is damaged ({exc}): it will be set aside at start") from exc
    finally:
        db.close()
    return f"{path}: {count:,} events held, {size:,} of {max_bytes:,} bytes"
