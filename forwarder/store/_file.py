"""The buffer file's layout, and the queries the store, `check` and salvage share.

runs     the events received together, at positions last_seq - count + 1 .. last_seq: `frames`
         is a msgpack array of the encoded events, `size` their bytes, `sinks` the bits of the
         sinks configured when they were received (the only sinks they are ever delivered to).
cursors  every sink ever configured: its bit, and the last position it finished.
meta     'last': the last position stored, so positions never go back, even after damage.

A row is removed once every sink whose bit it carries has finished it.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import msgspec

from forwarder.settings import FsyncMode

__all__ = [
    "BUFFER_FILE",
    "LAYOUT",
    "Checkpointer",
    "Cursor",
    "LayoutError",
    "check_layout",
    "connect",
    "connect_inspector",
    "connect_reader",
    "cursors",
    "finished_by_all",
    "pack",
    "transaction",
    "unpack",
    "waiting",
]

BUFFER_FILE: Final = "buffer.sqlite"
LAYOUT: Final = 1
"""PRAGMA user_version of this layout; a file with any other is set aside, not guessed at."""
SYNCHRONOUS: Final = {"always": "FULL", "batch": "NORMAL", "off": "OFF"}
SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS runs (
    last_seq INTEGER PRIMARY KEY,
    count INTEGER NOT NULL,
    size INTEGER NOT NULL,
    stored_at REAL NOT NULL,
    sinks INTEGER NOT NULL,
    frames BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS cursors (
    sink TEXT PRIMARY KEY,
    bit INTEGER NOT NULL,
    acked INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO meta (key, value) VALUES ('last', 0);
"""

CHECKPOINT_EVERY_S: Final = 0.5
pack: Final = msgspec.msgpack.Encoder().encode
_unpack_frames: Final = msgspec.msgpack.Decoder(list[bytes]).decode


class LayoutError(sqlite3.DatabaseError):
    """The file is an SQLite database, but not one this version wrote."""


@dataclass(frozen=True, slots=True)
class Cursor:
    """A sink's bit in `runs.sinks` and the last position it finished."""

    bit: int
    acked: int


def connect(path: Path, fsync: FsyncMode) -> sqlite3.Connection:
    """The writer's connection, in WAL mode; transactions are begun and ended explicitly."""
    db = sqlite3.connect(path, check_same_thread=False, timeout=30, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={SYNCHRONOUS[fsync]}")
    # Deleted cells are zeroed where that costs no extra write, so salvage never revives them;
    # freed overflow pages are left as they are (zeroing them doubled what a release wrote).
    db.execute("PRAGMA secure_delete=FAST")
    return db


def connect_reader(path: Path) -> sqlite3.Connection:
    """A connection that only reads: in WAL mode it never waits for the writer, nor it for it."""
    db = sqlite3.connect(path, check_same_thread=False, timeout=30, isolation_level=None)
    db.execute("PRAGMA query_only=1")
    return db


def connect_inspector(path: Path) -> sqlite3.Connection:
    """A read-only look at a file that may belong to a running forwarder; never creates it."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5, isolation_level=None)
    db.execute("PRAGMA query_only=1")
    return db


@contextlib.contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction; rolled back when anything fails, COMMIT included.

    A COMMIT that fails (disk full, I/O error) may leave the transaction open: it is rolled
    back here, so the connection is usable again and nothing of it was stored.
    """
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
        raise


def check_layout(db: sqlite3.Connection) -> None:
    """Raise LayoutError unless the file is empty or of this layout."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    tables = db.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0]
    if version != LAYOUT and (version or tables):
        raise LayoutError(f"written by another version of the forwarder (layout {version})")


def unpack(blob: bytes, count: int, size: int) -> list[bytes]:
    """A run's frames; ValueError when they are not `count` frames of `size` bytes."""
    try:
        frames = _unpack_frames(blob)
    except msgspec.DecodeError as exc:
        raise ValueError(f"the stored run does not unpack: {exc}") from exc
    if len(frames) != count or sum(map(len, frames)) != size:
        raise ValueError(f"the stored run holds {len(frames)} frames, not {count}")
    return frames


def cursors(db: sqlite3.Connection) -> dict[str, Cursor]:
    """Every sink the file knows, by name."""
    rows = db.execute("SELECT sink, bit, acked FROM cursors ORDER BY bit")
    return {sink: Cursor(bit, acked) for sink, bit, acked in rows}


def waiting(db: sqlite3.Connection, cursor: Cursor) -> tuple[int, float | None]:
    """Events a sink has not finished, and when the oldest of them was stored."""
    count, oldest = db.execute(
        "SELECT COALESCE(SUM(MIN(count, last_seq - ?)), 0), MIN(stored_at) FROM runs"
        " WHERE last_seq > ? AND sinks & ?",
        (cursor.acked, cursor.acked, cursor.bit),
    ).fetchone()
    return int(count), oldest


def finished_by_all(known: Mapping[str, Cursor]) -> tuple[str, list[int]]:
    """An SQL condition (and its parameters) true of rows every sink they carry has finished."""
    terms = ["(sinks & ? = 0 OR last_seq <= ?)"] * len(known)
    parameters = [value for cursor in known.values() for value in (cursor.bit, cursor.acked)]
    return " AND ".join(terms) or "1", parameters


class Checkpointer:
    """Copies the write-ahead log into the file every half second on a connection and thread of
    its own: the flush that comes with it never delays a put, nor a sink waiting for one."""

    def __init__(self, path: Path, *, synchronous: int) -> None:
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute(f"PRAGMA synchronous={synchronous}")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="buffer-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(CHECKPOINT_EVERY_S):
            with contextlib.suppress(sqlite3.Error):  # busy or failing now: next time
                self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._db.close()
