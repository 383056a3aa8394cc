"""The page reader finds exactly the rows SQLite itself reads, from the pages alone."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from forwarder.store._pages import Value, table_rows

VALUES: list[Value] = [
    None,
    0,
    1,
    -1,
    127,
    -128,
    32_767,
    -32_768,
    8_388_607,
    -8_388_608,
    2**31 - 1,
    -(2**31),
    2**47 - 1,
    -(2**47),
    2**63 - 1,
    -(2**63),
    1.5,
    -0.0,
    "",
    "text ünïcode",
    b"",
    b"\x00\xff blob",
]
"""One value of each storage class and of every integer width SQLite picks."""


def build(path: Path, page_size: int, rows: list[tuple[int, Value, Value]]) -> None:
    with closing(sqlite3.connect(path)) as db:
        db.execute(f"PRAGMA page_size = {page_size}")
        db.execute("PRAGMA auto_vacuum = NONE")
        db.execute("CREATE TABLE t (a, b)")
        db.executemany("INSERT INTO t (rowid, a, b) VALUES (?, ?, ?)", rows)
        db.commit()


def sqlite_rows(path: Path) -> list[tuple[int, list[Value]]]:
    """Every row of every table (the schema table included), as SQLite reads them."""
    with closing(sqlite3.connect(path)) as db:
        schema = [
            (rowid, list(values))
            for rowid, *values in db.execute("SELECT rowid, * FROM sqlite_schema")
        ]
        table = [(rowid, list(values)) for rowid, *values in db.execute("SELECT rowid, * FROM t")]
    return schema + table


def found(path: Path) -> list[tuple[int, list[Value]]]:
    return sorted(table_rows(path), key=lambda row: (len(row[1]) != 5, row[0]))


def same(path: Path) -> None:
    expected = sorted(sqlite_rows(path), key=lambda row: (len(row[1]) != 5, row[0]))
    got = found(path)
    assert len(got) == len(expected)
    for (rowid, values), (want_rowid, want) in zip(got, expected, strict=True):
        assert rowid == want_rowid
        assert [type(v) for v in values] == [type(v) for v in want]
        assert values == want


@pytest.mark.parametrize("page_size", [512, 4096, 65536])
def test_every_storage_class_and_integer_width_reads_as_sqlite_reads_it(tmp_path, page_size):
    """Rowids from 1 to 2**63-1 (every varint length), each value in both columns."""
    path = tmp_path / "db"
    rowids = [1, 127, 128, 16_383, 16_384, 2**21, 2**28, 2**35, 2**42, 2**49, 2**56, 2**63 - 1]
    rows = [
        (min(base + 7 * k, 2**63 - 1 - 7 * k), value, VALUES[-1 - n % len(VALUES)])
        for n, value in enumerate(VALUES * 3)
        for base, k in [(rowids[n % len(rowids)], n // len(rowids))]
    ]
    build(path, page_size, rows)
    same(path)


@pytest.mark.parametrize("page_size", [512, 4096])
def test_values_longer_than_a_page_are_read_through_their_overflow_chains(tmp_path, page_size):
    """Payloads just under, at and far over what fits on the leaf page, text and blob."""
    path = tmp_path / "db"
    sizes = [10, page_size // 4, page_size - 40, page_size - 30, page_size, 3 * page_size + 7]
    rows: list[tuple[int, Value, Value]] = []
    for n, size in enumerate(sizes):
        rows.append((2 * n + 1, bytes([n]) * size, "x" * (size // 2)))
        rows.append((2 * n + 2, "é" * size, None))
    build(path, page_size, rows)
    same(path)


def test_rows_on_freed_pages_are_not_found_again(tmp_path):
    """Deleted rows stay on pages the freelist holds (secure_delete off): they are skipped,
    through a freelist of several trunk pages."""
    path = tmp_path / "db"
    build(path, 512, [(n, n, b"y" * 200) for n in range(1, 1501)])
    with closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA secure_delete = OFF")
        db.execute("DELETE FROM t WHERE rowid > 20 AND rowid % 100 != 0")
        db.commit()
        free = db.execute("PRAGMA freelist_count").fetchone()[0]
    assert free > 2 * (512 // 4 - 2), "the freelist needs more than two trunk pages"
    same(path)
    assert len(found(path)) == 1 + 20 + 15


def test_an_empty_file_has_no_rows(tmp_path):
    path = tmp_path / "db"
    path.write_bytes(b"")
    assert list(table_rows(path)) == []


def test_a_file_without_the_header_is_read_as_4096_byte_pages(tmp_path):
    """The first page lost its header: the rows on the other pages are still found."""
    path = tmp_path / "db"
    build(path, 4096, [(n, n, b"z" * 500) for n in range(1, 41)])
    expected = [row for row in sqlite_rows(path) if len(row[1]) == 2]
    data = bytearray(path.read_bytes())
    data[:4096] = bytes(4096)
    path.write_bytes(bytes(data))
    rows = found(path)
    assert rows
    assert all(row in expected for row in rows)
    assert len(rows) >= len(expected) - 8


def test_pages_on_the_freelist_are_skipped_through_every_trunk(tmp_path):
    """Pages a freelist names are not read, however many trunks it has and wherever they lie
    (the last page, page 2), up to each trunk's count and no further: the same rows as with
    those pages wiped."""
    path = tmp_path / "db"
    build(path, 512, [(n, n, b"y" * 100) for n in range(1, 801)])
    data = bytearray(path.read_bytes())
    pages = len(data) // 512
    leaves = [p for p in range(3, pages) if data[(p - 1) * 512] == 0x0D]
    capacity = 512 // 4 - 2
    assert len(leaves) > 6 + capacity
    listed = leaves[:3], leaves[6 : 6 + capacity]
    not_listed = leaves[3:6]

    def trunk(page: int, following: int, entries: list[int], after: list[int]) -> None:
        body = following.to_bytes(4, "big") + len(entries).to_bytes(4, "big")
        body += b"".join(p.to_bytes(4, "big") for p in [*entries, *after])
        data[(page - 1) * 512 : page * 512] = body.ljust(512, b"\0")

    trunk(pages, 2, listed[0], not_listed)
    trunk(2, 0, listed[1], [])
    data[32:36] = pages.to_bytes(4, "big")
    crafted = tmp_path / "crafted"
    crafted.write_bytes(bytes(data))
    for page in [pages, 2, *listed[0], *listed[1]]:
        data[(page - 1) * 512 : page * 512] = bytes(512)
    data[32:36] = bytes(4)
    wiped = tmp_path / "wiped"
    wiped.write_bytes(bytes(data))
    rows = found(crafted)
    assert rows == found(wiped)
    assert len(rows) > 10


def test_a_freelist_said_to_start_at_page_one_is_no_freelist(tmp_path):
    """Page 1 holds the header and the schema: a damaged header naming it is not believed."""
    path = tmp_path / "db"
    build(path, 4096, [(n, n, b"z" * 50) for n in range(1, 21)])
    data = bytearray(path.read_bytes())
    data[32:36] = (1).to_bytes(4, "big")
    path.write_bytes(bytes(data))
    same(path)
