"""Rows read straight from the pages of an SQLite file, for salvaging a damaged buffer.

SQLite reaches a row through the pages above it, so one bad page stops a query at the first
row behind it. This reads each table leaf page on its own (format: sqlite.org/fileformat2.html),
follows each cell's overflow chain and parses its record, skipping what does not parse: every
row whose own bytes are intact is found, whatever became of the pages around it.

Pages on the freelist are skipped when the freelist still reads, and the store has SQLite zero the
cells of deleted rows (secure_delete=FAST): what this finds was live when the file was written.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Final

__all__ = ["Value", "table_rows"]

Value = int | float | str | bytes | None

_MAGIC: Final = b"SQLite format 3\x00"
_HEADER: Final = 100
_DEFAULT_PAGE: Final = 4096
_LEAF_TABLE: Final = 0x0D
_INT_SIZES: Final = (0, 1, 2, 3, 4, 6, 8)


class _UnreadableError(ValueError):
    """These bytes are not what the format says should be there."""


def table_rows(path: Path) -> Iterator[tuple[int, list[Value]]]:
    """(rowid, values) of every record on a table leaf page that still parses, in page order."""
    with path.open("rb") as file:
        try:
            data = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:  # an empty file cannot be mapped
            return
    with data:
        yield from _File(data).rows()


class _File:
    def __init__(self, data: mmap.mmap) -> None:
        self.data = data
        header_ok = data[: len(_MAGIC)] == _MAGIC
        size = int.from_bytes(data[16:18], "big") if header_ok else _DEFAULT_PAGE
        self.page_size = 65536 if size == 1 else size
        if self.page_size < 512 or self.page_size & (self.page_size - 1):
            self.page_size = _DEFAULT_PAGE
        self.usable = self.page_size - (data[20] if header_ok else 0)
        self.pages = len(data) // self.page_size
        self.free = self._freelist(int.from_bytes(data[32:36], "big")) if header_ok else set()

    def rows(self) -> Iterator[tuple[int, list[Value]]]:
        for number in range(1, self.pages + 1):
            if number in self.free:
                continue
            start = (number - 1) * self.page_size
            header = start + (_HEADER if number == 1 else 0)
            if self.data[header] != _LEAF_TABLE:
                continue
            cells = int.from_bytes(self.data[header + 3 : header + 5], "big")
            for index in range(cells):
                pointer = header + 8 + 2 * index
                try:
                    offset = int.from_bytes(self.data[pointer : pointer + 2], "big")
                    if not 0 < offset < self.page_size:
                        raise _UnreadableError("cell pointer outside the page")
                    rowid, payload = self._cell(start + offset, start + self.page_size)
                    yield rowid, _record(payload)
                except (_UnreadableError, IndexError, struct.error, UnicodeDecodeError):
                    continue

    def _cell(self, at: int, page_end: int) -> tuple[int, bytes]:
        size, at = _varint(self.data, at)
        rowid, at = _varint(self.data, at)
        local = _local_size(size, self.usable)
        if at + local > page_end:
            raise _UnreadableError("cell runs past its page")
        payload = bytearray(self.data[at : at + local])
        if local == size:
            return rowid, bytes(payload)
        following = int.from_bytes(self.data[at + local : at + local + 4], "big")
        seen: set[int] = set()
        while len(payload) < size:
            if not 1 < following <= self.pages or following in seen or following in self.free:
                raise _UnreadableError("broken overflow chain")
            seen.add(following)
            start = (following - 1) * self.page_size
            take = min(size - len(payload), self.usable - 4)
            payload += self.data[start + 4 : start + 4 + take]
            following = int.from_bytes(self.data[start : start + 4], "big")
        return rowid, bytes(payload)

    def _freelist(self, trunk: int) -> set[int]:
        """Pages on the freelist, as far as its trunk pages still read."""
        free: set[int] = set()
        while 1 < trunk <= self.pages and trunk not in free:
            free.add(trunk)
            start = (trunk - 1) * self.page_size
            count = int.from_bytes(self.data[start + 4 : start + 8], "big")
            for index in range(min(count, self.usable // 4 - 2)):
                at = start + 8 + 4 * index
                free.add(int.from_bytes(self.data[at : at + 4], "big"))
            trunk = int.from_bytes(self.data[start : start + 4], "big")
        return free


def _varint(data: mmap.mmap | bytes, at: int) -> tuple[int, int]:
    """SQLite's big-endian variable-length integer: the value and where the next field starts."""
    value = 0
    for index in range(8):
        byte = data[at + index]
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            return value, at + index + 1
    return (value << 8) | data[at + 8], at + 9


def _local_size(payload: int, usable: int) -> int:
    """How much of a table leaf cell's payload sits on its own page; the rest overflows."""
    most = usable - 35
    if payload <= most:
        return payload
    least = (usable - 12) * 32 // 255 - 23
    local = least + (payload - least) % (usable - 4)
    return local if local <= most else least


def _record(payload: bytes) -> list[Value]:
    """The values of one record; _UnreadableError unless its header and body agree to the byte."""
    header_end, at = _varint(payload, 0)
    if not 0 < header_end <= len(payload):
        raise _UnreadableError("record header out of bounds")
    types = []
    while at < header_end:
        serial, at = _varint(payload, at)
        types.append(serial)
    values: list[Value] = []
    body = header_end
    for serial in types:
        value: Value
        if serial <= 6:
            width = _INT_SIZES[serial]
            chunk = payload[body : body + width]
            value = int.from_bytes(chunk, "big", signed=True) if width else None
        elif serial == 7:
            width = 8
            value = struct.unpack(">d", payload[body : body + 8])[0]
        elif serial in (8, 9):
            width, value = 0, serial - 8
        elif serial >= 12:
            width = (serial - 12) // 2
            raw = payload[body : body + width]
            value = raw if serial % 2 == 0 else raw.decode()
        else:
            raise _UnreadableError(f"reserved serial type {serial}")
        body += width
        if body > len(payload):
            raise _UnreadableError("record body shorter than its header says")
        values.append(value)
    if body != len(payload):
        raise _UnreadableError("record body longer than its header says")
    return values
