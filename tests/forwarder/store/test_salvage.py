"""Salvage decides from the file's own rows which runs a sink still needs and how many are lost."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from forwarder.store._file import SCHEMA, pack
from forwarder.store._salvage import Salvaged, salvage

KAFKA, RELAY = 1, 2


def run(last_seq: int, count: int, sinks: int) -> tuple[int, int, int, float, int, bytes]:
    frames = [b"frame %d" % n for n in range(last_seq - count + 1, last_seq + 1)]
    return (last_seq, count, sum(map(len, frames)), 1.5, sinks, pack(frames))


def write(path: Path, runs, cursors, last: int | None) -> None:
    with closing(sqlite3.connect(path)) as db:
        db.executescript(SCHEMA)
        db.executemany("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?)", runs)
        db.executemany("INSERT INTO cursors VALUES (?, ?, ?)", cursors)
        if last is None:
            db.execute("DELETE FROM meta")
        else:
            db.execute("UPDATE meta SET value = ? WHERE key = 'last'", (last,))
        db.commit()


def salvaged(tmp_path: Path, runs, cursors, last: int | None = None):
    damaged = tmp_path / "damaged"
    write(damaged, runs, cursors, last)
    with closing(sqlite3.connect(tmp_path / "fresh", isolation_level=None)) as into:
        into.executescript(SCHEMA)
        found = salvage(damaged, into)
        kept = into.execute("SELECT last_seq, count, sinks FROM runs ORDER BY last_seq").fetchall()
        known = into.execute("SELECT sink, bit, acked FROM cursors ORDER BY bit").fetchall()
        [(stored_last,)] = into.execute("SELECT value FROM meta WHERE key = 'last'").fetchall()
    return found, kept, known, stored_last


def test_a_run_is_kept_while_a_sink_it_belongs_to_still_needs_it(tmp_path):
    """Kafka finished 300, the relay 600: a run for the relay alone up to 600 is done, one
    for both is needed from 301; the rest of a run a sink is partway through counts."""
    runs = [
        run(200, 100, KAFKA | RELAY),
        run(350, 150, RELAY),
        run(400, 50, KAFKA | RELAY),
        run(650, 250, RELAY),
        run(700, 50, KAFKA),
    ]
    found, kept, known, last = salvaged(
        tmp_path, runs, [("kafka", KAFKA, 300), ("relay", RELAY, 600)], last=700
    )
    assert kept == [(400, 50, KAFKA | RELAY), (650, 250, RELAY), (700, 50, KAFKA)]
    assert found == Salvaged(salvaged=50 + 50 + 50, lost=0)
    assert known == [("kafka", KAFKA, 300), ("relay", RELAY, 600)]
    assert last == 700


def test_without_cursors_every_run_is_kept_and_the_gaps_are_lost(tmp_path):
    """No sink is known to have finished anything: all of every run is salvaged, and the
    positions no run holds any more, up to the last stored, are counted lost."""
    found, kept, known, last = salvaged(
        tmp_path, [run(100, 40, KAFKA), run(300, 100, KAFKA)], [], last=None
    )
    assert kept == [(100, 40, KAFKA), (300, 100, KAFKA)]
    assert found == Salvaged(salvaged=140, lost=300 - 140)
    assert (known, last) == ([], 300)


def test_the_last_position_comes_from_whichever_row_says_the_most(tmp_path):
    """meta, a run or a cursor: positions after salvage never go back behind any of them."""
    for cursors, meta, expected in [
        ([("kafka", KAFKA, 900)], 500, 900),
        ([("kafka", KAFKA, 100)], 950, 950),
        ([("kafka", KAFKA, 100)], 0, 300),
    ]:
        directory = tmp_path / str(expected)
        directory.mkdir()
        _, _, _, last = salvaged(directory, [run(300, 100, KAFKA)], cursors, last=meta)
        assert last == expected


@pytest.mark.parametrize(
    ("row", "why"),
    [
        ((300, 0, 0, 1.5, KAFKA, pack([])), "a run of no events"),
        ((50, 100, 700, 1.5, KAFKA, pack([b"x" * 7] * 100)), "more events than positions"),
        ((300, 2, 5, 1.5, KAFKA, pack([b"abc", b"de"])), "ends exactly where it should"),
    ],
)
def test_a_run_row_is_believed_only_when_its_columns_agree(tmp_path, row, why):
    found, kept, _, _ = salvaged(tmp_path, [row], [("kafka", KAFKA, 0)], last=0)
    believed = why == "ends exactly where it should"
    assert (kept != []) == believed, why
    assert found.salvaged == (row[1] if believed else 0)


def test_a_cursor_without_a_bit_is_no_cursor(tmp_path):
    """Bit 0 marks no run: such a row is damage, not a sink that finished everything."""
    found, kept, known, _ = salvaged(
        tmp_path, [run(100, 100, KAFKA)], [("ghost", 0, 100), ("kafka", KAFKA, 0)], last=100
    )
    assert known == [("kafka", KAFKA, 0)]
    assert (kept, found.salvaged) == ([(100, 100, KAFKA)], 100)
