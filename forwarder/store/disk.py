"""The disk store: SQLite in WAL mode, one writer, readers that never wait for it, and an in-memory
tail that a sink keeping up takes from without touching the file.

- The receiving thread is the only writer. Each put is one transaction holding the new run, the
  positions the sinks finished since the last one, and the removal of rows that every sink they
  belong to has finished (a bounded number per transaction, so a sink catching up on a long
  backlog never makes one write long).
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

import bisect
import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from emitter.contract import Envelope, InvalidEnvelope, decode_envelope
from forwarder.settings import FsyncMode, WhenFull
from forwarder.store._file import (
    LAYOUT,
    SCHEMA,
    Cursor,
    check_layout,
    connect,
    connect_reader,
    cursors,
    finished_by_all,
    held,
    pack,
    transaction,
    unpack,
)
from forwarder.store._salvage import salvage
from forwarder.store.base import (
    BUFFER_FULL,
    WRITE_FAILED,
    Backlog,
    Batch,
    Closed,
    Damaged,
    Held,
    Progress,
    Store,
    Stored,
)

__all__ = ["DiskStore", "Salvage", "discard", "open_disk"]

_TAIL_EVENTS: Final = 20_000
_TAIL_BYTES: Final = 16 << 20
"""How much of the newest stored events the tail keeps decoded for sinks that keep up."""
_RELEASE_ROWS: Final = 1_000
"""Most rows one transaction looks at to remove: a long backlog is released a slice at a time."""
_PROGRESS_EVERY_S: Final = 0.1
"""Longest a sink's progress waits to be written when no put carries it; a crash in between
has those events delivered again."""
_CHECKPOINT_EVERY_S: Final = 0.5


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
    when_full: WhenFull = "drop_newest",
    fsync: FsyncMode = "batch",
    queue_max: int = 100_000,
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
        count, _ = held(db, known[sink])
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
class _Run:
    """Events stored together, decoded, at positions first..last."""

    first: int
    last: int
    size: int
    envelopes: Sequence[Envelope]


class _Tail:
    """The newest stored runs, decoded, and where the store stands; guarded by `lock`.

    Everything in it is also in the file. Its runs are contiguous and belong to every
    configured sink (runs stored by this process carry all of them).
    """

    def __init__(self, last: int) -> None:
        self.lock = threading.Condition()
        self.runs: list[_Run] = []
        self.lasts: list[int] = []
        self.start = 0
        self.events = 0
        self.bytes = 0
        self.last = last
        """The last position stored (committed)."""
        self.front = 0
        """Positions before this one were deleted to make room (FORWARDER_WHEN_FULL)."""
        self.closed = False

    def append(self, run: _Run) -> None:
        self.runs.append(run)
        self.lasts.append(run.last)
        self.events += len(run.envelopes)
        self.bytes += run.size
        self.last = run.last
        while (self.events > _TAIL_EVENTS or self.bytes > _TAIL_BYTES) and self._held() > 1:
            self._pop()

    def after(self, position: int) -> int:
        """Index of the first run holding a position after `position` (len(runs) if none)."""
        return bisect.bisect_right(self.lasts, position, self.start)

    def drop_through(self, position: int) -> None:
        """Forget positions up to `position`, deleted from the file to make room."""
        self.front = max(self.front, position + 1)
        while self._held() and self.runs[self.start].last <= position:
            self._pop()
        if self._held() and self.runs[self.start].first <= position:
            run = self.runs[self.start]
            cut = position + 1 - run.first
            self.events -= cut
            self.runs[self.start] = _Run(position + 1, run.last, run.size, run.envelopes[cut:])

    def _held(self) -> int:
        return len(self.runs) - self.start

    def _pop(self) -> None:
        run = self.runs[self.start]
        self.events -= len(run.envelopes)
        self.bytes -= run.size
        self.start += 1
        if self.start > 1024 and self.start * 2 > len(self.runs):
            del self.runs[: self.start]
            del self.lasts[: self.start]
            self.start = 0


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
        self._tail = _Tail(self._last)
        self._readers: dict[str, _DiskBacklog] = {}
        self._held: dict[str, _Kept] = {}
        for name, cursor in self._known.items():
            count, oldest = held(db, cursor)
            oldest_ns = None if oldest is None else int(oldest * 1e9)
            if name in sinks:
                progress = Progress(cursor.acked, count, oldest_ns)
                self._readers[name] = _DiskBacklog(self._tail, path, cursor.bit, progress)
            elif count:
                self._held[name] = _Kept(count, oldest_ns)
        self._pending: dict[str, tuple[int, int]] = {}
        self._waiting_frames: list[bytes] = []
        self._waiting_envelopes: list[Envelope] = []
        self._saved_at = time.monotonic()
        self._checkpointer = _Checkpointer(path, synchronous=self.synchronous)

    @property
    def synchronous(self) -> int:
        """PRAGMA synchronous of the writer's connection: 2 FULL, 1 NORMAL, 0 OFF."""
        return int(self._db.execute("PRAGMA synchronous").fetchone()[0])

    def backlog(self, sink: str) -> Backlog:
        return self._readers[sink]

    def held(self) -> Mapping[str, Held]:
        with self._tail.lock:
            return {name: Held(kept.count, kept.oldest_ns) for name, kept in self._held.items()}

    def put(self, frames: Sequence[bytes], envelopes: Sequence[Envelope]) -> Stored:
        """Store, oldest first, what waits from earlier failed writes and then `frames`."""
        self._waiting_frames.extend(frames)
        self._waiting_envelopes.extend(envelopes)
        if not self._waiting_frames:
            return Stored()
        return self._write()

    def maintain(self) -> Stored:
        """Write what waits in memory, else record the sinks' progress and release rows."""
        if self._waiting_frames:
            return self._write()
        if time.monotonic() - self._saved_at < _PROGRESS_EVERY_S or not (
            self._pending or self._progressed()
        ):
            return Stored()
        try:
            with transaction(self._db) as db:
                saved = self._save_progress(db, _RELEASE_ROWS)
        except sqlite3.Error as exc:
            return Stored(error=str(exc))
        self._saved(saved)
        return Stored()

    def close(self) -> Closed:
        """One last attempt to write what waits in memory; the sinks' progress; connections."""
        not_stored: dict[str, int] = {}
        if self._waiting_frames:
            last_try = self._write()
            for name in self._sinks:
                count = len(self._waiting_frames) + last_try.dropped.get(name, 0)
                if count:
                    not_stored[name] = count
            self._waiting_frames, self._waiting_envelopes = [], []
        try:
            with transaction(self._db) as db:
                saved = self._save_progress(db, None)
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
        frames, envelopes = self._waiting_frames, self._waiting_envelopes
        now = self._clock()
        try:
            with transaction(self._db) as db:
                saved = self._save_progress(db, _RELEASE_ROWS)
                size_now = self._bytes - saved.freed
                start, end, size = self._fit(frames, size_now)
                if end - start < len(frames) and saved.pending:
                    saved = self._save_progress(db, None)  # first make room from what is done
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
        self._waiting_frames, self._waiting_envelopes = [], []
        refused = len(frames) - (end - start)
        dropped = dict.fromkeys(self._sinks, refused) if refused else {}
        with self._tail.lock:
            if deleted:
                for name, count in self._dropped_oldest(deleted).items():
                    dropped[name] = dropped.get(name, 0) + count
            if end > start:
                kept = envelopes[start:end]
                run = _Run(self._last + 1, self._last + len(kept), size, kept)
                self._last = run.last
                self._tail.append(run)
                for reader in self._readers.values():
                    reader.progress.added(len(kept), kept[0].ts)
                self._tail.lock.notify_all()
        return Stored(dropped, BUFFER_FULL if dropped else None)

    def _write_failed(self, exc: sqlite3.Error) -> Stored:
        """The disk refused: keep the events in memory, up to FORWARDER_QUEUE_MAX, oldest out."""
        overflow = len(self._waiting_frames) - self._queue_max
        dropped = {}
        if overflow > 0:
            del self._waiting_frames[:overflow]
            del self._waiting_envelopes[:overflow]
            dropped = dict.fromkeys(self._sinks, overflow)
        return Stored(dropped, WRITE_FAILED, str(exc), len(self._waiting_frames))

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
        for name, kept in self._held.items():
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

    def _save_progress(self, db: sqlite3.Connection, budget: int | None) -> _Saved:
        """Record what the sinks finished and remove rows all their sinks are done with, looking
        at `budget` rows at most (None: all). Call inside a transaction."""
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
            upto = end
            if budget is not None:
                row = db.execute(
                    "SELECT last_seq FROM runs WHERE last_seq > ? ORDER BY last_seq"
                    " LIMIT 1 OFFSET ?",
                    (start, budget - 1),
                ).fetchone()
                if row is not None and row[0] < end:
                    upto = row[0]
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


class _Checkpointer:
    """Copies the write-ahead log into the file every half second on a connection and thread of
    its own: the flush that comes with it never delays a put, nor a sink waiting for one."""

    def __init__(self, path: Path, *, synchronous: int) -> None:
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute(f"PRAGMA synchronous={synchronous}")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="buffer-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(_CHECKPOINT_EVERY_S):
            with contextlib.suppress(sqlite3.Error):  # busy or failing now: next time
                self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._db.close()


def _after(deleted: list[tuple[int, int, int]], bit: int, position: int) -> int:
    """Deleted positions after `position` in stretches carrying `bit`."""
    return sum(
        max(0, last - max(first - 1, position)) for first, last, sinks in deleted if sinks & bit
    )


class _DiskBacklog(Backlog):
    """One sink's reader: from the tail while it keeps up, from the file on its own connection
    once it fell behind."""

    def __init__(self, tail: _Tail, path: Path, bit: int, progress: Progress) -> None:
        self._tail = tail
        self._path = path
        self.bit = bit
        self.progress = progress
        self._db: sqlite3.Connection | None = None
        self._db_lock = threading.Lock()
        self._closed = False
        self.file_reads = 0
        """Reads of the file: none while the sink keeps up with what is stored."""

    def take(self, limit: int, wait_s: float) -> Batch:
        tail = self._tail
        deadline = time.monotonic() + wait_s
        while True:
            with tail.lock:
                while True:
                    if tail.closed:
                        return Batch()
                    batch = self._from_tail(limit)
                    if batch is None:
                        break
                    remaining = deadline - time.monotonic()
                    if batch or remaining <= 0:
                        self.progress.taken_out(batch)
                        return batch
                    tail.lock.wait(remaining)
                stored_up_to, after = tail.last, self.progress.taken
            batch = self._from_file(after, limit)
            with tail.lock:
                if tail.closed:
                    return Batch()
                if self.progress.taken != after:
                    continue  # positions were deleted to make room while reading: read again
                if batch:
                    self.progress.taken_out(batch)
                    return batch
                # Nothing of this sink's up to what was stored when the read began.
                self.progress.taken = max(after, stored_up_to)

    def _from_tail(self, limit: int) -> Batch | None:
        """The next events from the tail; None when some come before it (read the file)."""
        tail = self._tail
        taken = self.progress.taken
        index = tail.after(taken)
        if index == len(tail.runs):
            return Batch() if taken >= tail.last else None
        if tail.runs[index].first > taken + 1:
            return None
        batch = Batch(first=taken + 1, last=taken)
        envelopes = batch.envelopes
        for run in tail.runs[index:]:
            offset = batch.last + 1 - run.first
            chunk = run.envelopes[offset : offset + limit - len(envelopes)]
            envelopes.extend(chunk)
            batch.last += len(chunk)
            if len(envelopes) >= limit:
                break
        return batch

    def _from_file(self, after: int, limit: int) -> Batch:
        """The next events after position `after` in the file, decoded; on this reader's own
        connection, so neither the writer nor another sink waits for it."""
        batch = Batch(first=after + 1, last=after)
        with self._db_lock:
            if self._closed:
                return batch
            if self._db is None:
                self._db = connect_reader(self._path)
            self.file_reads += 1
            rows = self._db.execute(
                "SELECT last_seq, count, size, frames FROM runs"
                " WHERE last_seq > ? AND sinks & ? ORDER BY last_seq",
                (after, self.bit),
            )
            try:
                for last_seq, count, size, blob in rows:
                    first = last_seq - count + 1
                    skip = max(0, batch.last + 1 - first)
                    taking = min(count - skip, limit - len(batch))
                    _decode(blob, count, size, skip=skip, taking=taking, into=batch)
                    batch.last = first + skip + taking - 1
                    if len(batch) >= limit:
                        break
            finally:
                rows.close()
        return batch

    def done(self, batch: Batch) -> None:
        with self._tail.lock:
            self.progress.finish(batch)

    def depth(self) -> int:
        return self.progress.held

    def oldest_age_s(self) -> float | None:
        with self._tail.lock:
            return self.progress.oldest_age_s()

    def close(self) -> None:
        with self._db_lock:
            self._closed = True
            if self._db is not None:
                self._db.close()
                self._db = None


def _decode(blob: bytes, count: int, size: int, *, skip: int, taking: int, into: Batch) -> None:
    """Frames skip..skip+taking of a stored run into `into`: envelopes, or damage to report."""
    try:
        frames = unpack(blob, count, size)
    except ValueError as exc:
        into.damaged.append(Damaged(bytes(blob), f"unreadable in the buffer: {exc}", taking))
        return
    for frame in frames[skip : skip + taking]:
        try:
            into.envelopes.append(decode_envelope(frame))
        except InvalidEnvelope as exc:
            into.damaged.append(Damaged(frame, f"unreadable in the buffer: {exc.reason}"))
