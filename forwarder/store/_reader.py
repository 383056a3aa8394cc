"""One sink's reader in the disk store: from the tail while the sink keeps up, from the file,
on a connection of its own, once it fell behind."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from emitter.contract import InvalidEnvelope, decode_envelope
from forwarder.store._file import connect_reader, unpack
from forwarder.store._tail import Tail
from forwarder.store.base import Batch, Damaged, Progress, Reader

__all__ = ["FileReader"]


class FileReader(Reader):
    """One sink's reader: from the tail while it keeps up, from the file on its own connection
    once it fell behind."""

    def __init__(self, tail: Tail, path: Path, bit: int, progress: Progress) -> None:
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

    def waiting(self) -> int:
        return self.progress.waiting

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
