"""The disk store: SQLite in WAL mode, one writer, readers that never wait for it, and an in-memory
tail that a sink keeping up takes from without touching the file.

- The receiving thread is the only writer. Each put is one transaction holding the new run, the
  positions the sinks finished since the last one, and the removal of rows that every sink they
  belong to has finished (a bounded slice per transaction, by rows and by bytes, so a sink
  catching up on a long backlog never makes one write long). Checkpoints, which copy the log into
  the file and flush it, run on a thread and connection of their own.
- Once committed, the run also joins the tail: the most recent runs, decoded once. A sink whose
  next event is in the tail takes it from there, under a lock held for microseconds.
- A sink that fell behind the tail (after a restart, or a long outage) reads the file on a
  connection of its own: in WAL mode a reader sees a committed snapshot, and neither it nor the
  writer waits for the other.
- Depth and oldest age are kept in memory: no query runs for a scrape or a status line.

Every event is written before any sink sees it. A failed write (disk full, I/O error) keeps the
events in memory, up to FORWARDER_QUEUE_MAX, and the next put or maintenance writes them, oldest
first; a sink sees them once they are stored.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final

from emitter.contract import Envelope
from forwarder.settings import FsyncMode, Settings, WhenFull
from forwarder.store._file import (
    LAYOUT,
    SCHEMA,
    Checkpointer,
    Cursor,
    check_layout,
    connect,
    cursors,
    finished_by_all,
    pack,
    transaction,
    unpack,
    waiting,
)
from forwarder.store._reader import FileReader
from forwarder.store._salvage import salvage
from forwarder.store._tail import Run, Tail
from forwarder.store.base import (
    BUFFER_FULL,
    WRITE_FAILED,
    Closed,
    Progress,
    Reader,
    Store,
    Stored,
    Unconfigured,
)

__all__ = ["DiskStore", "Salvage", "discard", "open_disk"]

_RELEASE_ROWS: Final = 1_000
_RELEASE_BYTES: Final = 8 << 20
"""Most rows, and bytes, one transaction removes: a long backlog is released a slice at a time."""
_PROGRESS_EVERY_S: Final = 0.1
"""Longest a sink's progress waits to be written when no put carries it; a crash in between
has those events delivered again."""


@dataclass(frozen=True, slots=True)
class Salvage:
    """A buffer file that failed its check at start: where it went, why, and what was kept."""

    aside: Path
    reason: str
    salvaged: int
    lost: int


def open_disk(
    path: Path,
    sinks: Sequence[str],
    *,
    max_bytes: int,
    when_full: WhenFull = Settings.when_full,
    fsync: FsyncMode = Settings.fsync,
    queue_max: int = Settings.queue_max,
    clock: Callable[[], float] = time.time,
) -> tuple[DiskStore, Salvage | None]:
    """The store for the configured `sinks`, and what became of a damaged file, if any."""
    db, salvaged = _open_or_recover(path, fsync, clock)
    try:
        store = DiskStore(
            db,
            path,
            sinks,
            max_bytes=max_bytes,
            when_full=when_full,
            queue_max=queue_max,
            clock=clock,
        )
    except BaseException:
        db.close()
        raise
    return store, salvaged


def discard(path: Path, sink: str) -> int:
    """Forget what the file holds for `sink` (the forwarder stopped); how many events that was."""
    db = connect(path, "batch")
    try:
        check_layout(db)
        known = cursors(db)
        if sink not in known:
            return 0
        count, _ = waiting(db, known[sink])
        last = db.execute("SELECT value FROM meta WHERE key = 'last'").fetchone()[0]
        known[sink] = Cursor(known[sink].bit, max(last, known[sink].acked))
        condition, parameters = finished_by_all(known)
        with transaction(db):
            db.execute("UPDATE cursors SET acked = ? WHERE sink = ?", (known[sink].acked, sink))
            db.execute(f"DELETE FROM runs WHERE {condition}", parameters)  # noqa: S608 - no input
        return count
    finally:
        db.close()


def _open_or_recover(
    path: Path, fsync: FsyncMode, clock: Callable[[], float]
) -> tuple[sqlite3.Connection, Salvage | None]:
    """A file that fails its check is set aside; every intact row of it is copied back."""
    try:
        db = connect(path, fsync)
        try:
            check = db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise sqlite3.DatabaseError(check)
            check_layout(db)
            _create(db)
        except BaseException:
            db.close()  # the last connection folds the write-ahead log into the file
            raise
    except sqlite3.OperationalError:
        raise  # locked, unreadable, out of space: not damage, so nothing is set aside
    except sqlite3.DatabaseError as exc:
        aside = path.with_name(f"{path.name}.corrupt-{int(clock())}")
        for suffix in ("", "-wal", "-shm"):
            damaged = Path(f"{path}{suffix}")
            if damaged.exists():
                damaged.rename(Path(f"{aside}{suffix}"))
        db = connect(path, fsync)
        _create(db)
        found = salvage(aside, db)
        reason = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        return db, Salvage(aside, reason, found.salvaged, found.lost)
    return db, None


def _create(db: sqlite3.Connection) -> None:
    db.executescript(SCHEMA)
    db.execute(f"PRAGMA user_version={LAYOUT}")


@dataclass(slots=True)
class _Kept:
    """What the file holds for a sink no longer configured."""

    count: int
    oldest_ns: int | None


@dataclass(frozen=True, slots=True)
class _Saved:
    """What one transaction wrote of the sinks' progress, applied once it committed."""

    acked: Mapping[str, int]
    pending: Mapping[str, tuple[int, int]]
    freed: int


class DiskStore(Store):
    """One SQLite file shared by all sinks; the receiving thread is its only writer."""

    def __init__(
        self,
        db: sqlite3.Connection,
        path: Path,
        sinks: Sequence[str],
        *,
        max_bytes: int,
        when_full: WhenFull,
        queue_max: int,
        clock: Callable[[], float],
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.when_full = when_full
        self._db = db
        # Checkpoints copy the log into the file and flush it: a thread of their own does them.
        db.execute("PRAGMA wal_autocheckpoint=0")
        self._queue_max = queue_max
        self._clock = clock
        self._sinks = tuple(sinks)
        self._known = cursors(db)
        last: int = db.execute(
            "SELECT MAX(COALESCE((SELECT value FROM meta WHERE key = 'last'), 0),"
            " COALESCE((SELECT MAX(last_seq) FROM runs), 0))"
        ).fetchone()[0]
        self._last = max([last, *(cursor.acked for cursor in self._known.values())])
        with transaction(db):
            for name in sinks:
                if name not in self._known:
                    used = sum(cursor.bit for cursor in self._known.values())
                    bit = (used + 1) & ~used  # the lowest bit no sink has
                    self._known[name] = Cursor(bit, self._last)
                    db.execute(
                        "INSERT INTO cursors (sink, bit, acked) VALUES (?, ?, ?)",
                        (name, bit, self._last),
                    )
            condition, parameters = finished_by_all(self._known)
            db.execute(f"DELETE FROM runs WHERE {condition}", parameters)  # noqa: S608 - no input
        self._mask = sum(self._known[name].bit for name in sinks)
        self._bytes: int = db.execute("SELECT COALESCE(SUM(size), 0) FROM runs").fetchone()[0]
        self._tail = Tail(self._last)
        self._readers: dict[str, FileReader] = {}
        self._unconfigured: dict[str, _Kept] = {}
        for name, cursor in self._known.items():
            count, oldest = waiting(db, cursor)
            oldest_ns = None if oldest is None else int(oldest * 1e9)
            if name in sinks:
                progress = Progress(cursor.acked, count, oldest_ns)
                self._readers[name] = FileReader(self._tail, path, cursor.bit, progress)
            elif count:
                self._unconfigured[name] = _Kept(count, oldest_ns)
        self._pending: dict[str, tuple[int, int]] = {}
        self._unwritten_frames: list[bytes] = []
        self._waiting_envelopes: list[Envelope] = []
        self._saved_at = time.monotonic()
        self._checkpointer = Checkpointer(path, synchronous=self.synchronous)

    @property
    def synchronous(self) -> int:
        """PRAGMA synchronous of the writer's connection: 2 FULL, 1 NORMAL, 0 OFF."""
        return int(self._db.execute("PRAGMA synchronous").fetchone()[0])

    def reader(self, sink: str) -> Reader:
        return self._readers[sink]

    def unconfigured(self) -> Mapping[str, Unconfigured]:
        with self._tail.lock:
            return {
                name: Unconfigured(kept.count, kept.oldest_ns)
                for name, kept in self._unconfigured.items()
            }

    def put(self, frames: Sequence[bytes], envelopes: Sequence[Envelope]) -> Stored:
        """Store, oldest first, what waits from earlier failed writes and then `frames`."""
        self._unwritten_frames.extend(frames)
        self._waiting_envelopes.extend(envelopes)
        if not self._unwritten_frames:
            return Stored()
        return self._write()

    def maintain(self) -> Stored:
        """Write what waits in memory, else record the sinks' progress and release rows."""
        if self._unwritten_frames:
            return self._write()
        if time.monotonic() - self._saved_at < _PROGRESS_EVERY_S or not (
            self._pending or self._progressed()
        ):
            return Stored()
        try:
            with transaction(self._db) as db:
                saved = self._save_progress(db, bounded=True)
        except sqlite3.Error as exc:
            return Stored(error=str(exc))
        self._saved(saved)
        return Stored()

    def close(self) -> Closed:
        """One last attempt to write what waits in memory; the sinks' progress; connections."""
        not_stored: dict[str, int] = {}
        if self._unwritten_frames:
            last_try = self._write()
            for name in self._sinks:
                count = len(self._unwritten_frames) + last_try.dropped.get(name, 0)
                if count:
                    not_stored[name] = count
            self._unwritten_frames, self._waiting_envelopes = [], []
        try:
            with transaction(self._db) as db:
                saved = self._save_progress(db, bounded=False)
            self._saved(saved)
        except sqlite3.Error:
            pass  # what the sinks finished since the last write is sent again: never lost
        with self._tail.lock:
            self._tail.closed = True
            self._tail.lock.notify_all()
        for reader in self._readers.values():
            reader.close()
        self._checkpointer.close()
        self._db.close()  # the last connection folds the log into the file and removes it
        return Closed(not_stored)

    def _write(self) -> Stored:
        frames, envelopes = self._unwritten_frames, self._waiting_envelopes
        now = self._clock()
        try:
            with transaction(self._db) as db:
                saved = self._save_progress(db, bounded=True)
                size_now = self._bytes - saved.freed
                start, end, size = self._fit(frames, size_now)
                if end - start < len(frames) and saved.pending:
                    # Rows every sink is done with go first, before a single event is refused.
                    first = saved.freed
                    saved = self._save_progress(db, bounded=False)
                    saved = replace(saved, freed=first + saved.freed)
                    size_now = self._bytes - saved.freed
                    start, end, size = self._fit(frames, size_now)
                deleted: list[tuple[int, int, int]] = []
                freed = 0
                if self.when_full == "drop_oldest" and size_now + size > self.max_bytes:
                    deleted, freed = self._make_room(db, size_now + size - self.max_bytes)
                if end > start:
                    db.execute(
                        "INSERT INTO runs (last_seq, count, size, stored_at, sinks, frames)"
                        " VALUES (?, ?, ?, ?, ?, ?)",
                        (
                            self._last + end - start,
                            end - start,
                            size,
                            now,
                            self._mask,
                            pack(frames[start:end]),
                        ),
                    )
                    db.execute(
                        "UPDATE meta SET value = ? WHERE key = 'last'", (self._last + end - start,)
                    )
        except sqlite3.Error as exc:
            return self._write_failed(exc)
        self._saved(saved)
        self._bytes += size - freed
        self._unwritten_frames, self._waiting_envelopes = [], []
        refused = len(frames) - (end - start)
        dropped = dict.fromkeys(self._sinks, refused) if refused else {}
        with self._tail.lock:
            if deleted:
                for name, count in self._dropped_oldest(deleted).items():
                    dropped[name] = dropped.get(name, 0) + count
            if end > start:
                kept = envelopes[start:end]
                run = Run(self._last + 1, self._last + len(kept), size, kept)
                self._last = run.last
                self._tail.append(run)
                for reader in self._readers.values():
                    reader.progress.added(len(kept), kept[0].ts)
                self._tail.lock.notify_all()
        return Stored(dropped, BUFFER_FULL if dropped else None)

    def _write_failed(self, exc: sqlite3.Error) -> Stored:
        """The disk refused: keep the events in memory, up to FORWARDER_QUEUE_MAX, oldest out."""
        overflow = len(self._unwritten_frames) - self._queue_max
        dropped = {}
        if overflow > 0:
            del self._unwritten_frames[:overflow]
            del self._waiting_envelopes[:overflow]
            dropped = dict.fromkeys(self._sinks, overflow)
        return Stored(dropped, WRITE_FAILED, str(exc), len(self._unwritten_frames))

    def _fit(self, frames: Sequence[bytes], stored: int) -> tuple[int, int, int]:
        """The part frames[start:end] the policy keeps when the buffer holds `stored` bytes."""
        size = sum(map(len, frames))
        if stored + size <= self.max_bytes:
            return 0, len(frames), size
        if self.when_full == "drop_newest":
            room, kept, end = self.max_bytes - stored, 0, 0
            while end < len(frames) and kept + len(frames[end]) <= room:
                kept += len(frames[end])
                end += 1
            return 0, end, kept
        start = 0
        while start < len(frames) and size > self.max_bytes:
            size -= len(frames[start])
            start += 1
        return start, len(frames), size

    def _make_room(
        self, db: sqlite3.Connection, excess: int
    ) -> tuple[list[tuple[int, int, int]], int]:
        """Delete the oldest events until `excess` bytes are freed: (first, last, sinks) of each
        deleted stretch, and the bytes freed. Call inside a transaction."""
        deleted: list[tuple[int, int, int]] = []
        freed = 0
        while freed < excess:
            row = db.execute(
                "SELECT last_seq, count, size, sinks, frames FROM runs ORDER BY last_seq LIMIT 1"
            ).fetchone()
            if row is None:
                break
            last_seq, count, size, sinks, blob = row
            first = last_seq - count + 1
            try:
                frames = unpack(blob, count, size) if freed + size > excess else []
            except ValueError:
                frames = []
            if not frames:
                db.execute("DELETE FROM runs WHERE last_seq = ?", (last_seq,))
                deleted.append((first, last_seq, sinks))
                freed += size
                continue
            cut = 0
            while freed < excess:
                freed += len(frames[cut])
                cut += 1
            rest = frames[cut:]
            db.execute(
                "UPDATE runs SET count = ?, size = ?, frames = ? WHERE last_seq = ?",
                (len(rest), sum(map(len, rest)), pack(rest), last_seq),
            )
            deleted.append((first, first + cut - 1, sinks))
        return deleted, freed

    def _dropped_oldest(self, deleted: list[tuple[int, int, int]]) -> dict[str, int]:
        """Account for deleted positions: each sink loses those it had not taken yet.
        Call under the tail's lock."""
        through = deleted[-1][1]
        lost: dict[str, int] = {}
        for name, reader in self._readers.items():
            progress = reader.progress
            count = _after(deleted, reader.bit, progress.taken)
            if count:
                progress.lost(count)
                lost[name] = count
            progress.taken = max(progress.taken, through)
        for name, kept in self._unconfigured.items():
            count = _after(deleted, self._known[name].bit, self._known[name].acked)
            if count:
                kept.count -= count
                lost[name] = count
        self._tail.drop_through(through)
        return lost

    def _progressed(self) -> bool:
        return any(
            reader.progress.finished > self._known[name].acked
            for name, reader in self._readers.items()
        )

    def _save_progress(self, db: sqlite3.Connection, *, bounded: bool) -> _Saved:
        """Record what the sinks finished and remove rows all their sinks are done with, a slice
        at a time when `bounded`. Call inside a transaction."""
        known = dict(self._known)
        pending = dict(self._pending)
        acked = {}
        for name, reader in self._readers.items():
            finished = reader.progress.finished
            if finished > known[name].acked:
                db.execute("UPDATE cursors SET acked = ? WHERE sink = ?", (finished, name))
                start = pending[name][0] if name in pending else known[name].acked
                pending[name] = (start, finished)
                known[name] = Cursor(known[name].bit, finished)
                acked[name] = finished
        condition, parameters = finished_by_all(known)
        freed = 0
        for name, (start, end) in list(pending.items()):
            upto = _slice_end(db, start, end) if bounded else end
            where = f"last_seq > ? AND last_seq <= ? AND {condition}"
            arguments = (start, upto, *parameters)
            freed += db.execute(
                f"SELECT COALESCE(SUM(size), 0) FROM runs WHERE {where}",  # noqa: S608 - no input
                arguments,
            ).fetchone()[0]
            db.execute(f"DELETE FROM runs WHERE {where}", arguments)  # noqa: S608 - no input
            if upto < end:
                pending[name] = (upto, end)
                break  # the rest in the next transaction
            del pending[name]
        return _Saved(acked, pending, freed)

    def _saved(self, saved: _Saved) -> None:
        """A transaction with `saved` in it committed."""
        self._saved_at = time.monotonic()
        for name, acked in saved.acked.items():
            self._known[name] = Cursor(self._known[name].bit, acked)
        self._pending = dict(saved.pending)
        self._bytes -= saved.freed


def _slice_end(db: sqlite3.Connection, start: int, end: int) -> int:
    """Where to stop removing rows after `start` (up to `end`) to stay within one slice."""
    rows = db.execute(
        "SELECT last_seq, size FROM runs WHERE last_seq > ? AND last_seq <= ? ORDER BY last_seq"
        " LIMIT ?",
        (start, end, _RELEASE_ROWS),
    ).fetchall()
    total = 0
    for index, (_, size) in enumerate(rows):
        total += size
        if total > _RELEASE_BYTES and index:
            return int(rows[index - 1][0])
    return end if len(rows) < _RELEASE_ROWS else int(rows[-1][0])


def _after(deleted: list[tuple[int, int, int]], bit: int, position: int) -> int:
    """Deleted positions after `position` in stretches carrying `bit`."""
    return sum(
        max(0, last - max(first - 1, position)) for first, last, sinks in deleted if sinks & bit
    )
