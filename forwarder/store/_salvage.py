"""Copy what a damaged buffer file still holds into a fresh one, and estimate what it lost."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from forwarder.store._file import Cursor, transaction, unpack
from forwarder.store._pages import Value, table_rows

__all__ = ["Salvaged", "salvage"]


@dataclass(frozen=True, slots=True)
class Salvaged:
    """Events copied back (some sink had not finished them), and an estimate of those lost."""

    salvaged: int
    lost: int


@dataclass(frozen=True, slots=True)
class _Run:
    last_seq: int
    count: int
    size: int
    stored_at: float
    sinks: int
    frames: bytes


def salvage(damaged: Path, into: sqlite3.Connection) -> Salvaged:
    """Every intact row of `damaged` that some sink still needed goes to `into`, positions kept.

    Lost is estimated from the positions: those after the last one every sink finished, up to
    the last one stored, that no intact row holds any more.
    """
    runs: dict[int, _Run] = {}
    known: dict[str, Cursor] = {}
    last = 0
    for rowid, values in table_rows(damaged):
        if (run := _run(rowid, values)) is not None:
            runs[run.last_seq] = run
        elif (named := _cursor(values)) is not None:
            known[named[0]] = named[1]
        elif len(values) == 2 and values[0] == "last" and isinstance(values[1], int):
            last = max(last, values[1])
    floor = min((cursor.acked for cursor in known.values()), default=0)
    last = max([last, *runs, *(cursor.acked for cursor in known.values())])
    found = salvaged = 0
    ordered = sorted(runs.values(), key=lambda run: run.last_seq)
    with transaction(into):
        for run in ordered:
            found += max(0, min(run.count, run.last_seq - floor))
            needed = [c.acked for c in known.values() if run.sinks & c.bit] or [0]
            if run.last_seq <= min(needed):
                continue
            salvaged += min(run.count, run.last_seq - min(needed))
            into.execute(
                "INSERT INTO runs (last_seq, count, size, stored_at, sinks, frames)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (run.last_seq, run.count, run.size, run.stored_at, run.sinks, run.frames),
            )
        into.executemany(
            "INSERT INTO cursors (sink, bit, acked) VALUES (?, ?, ?)",
            [(name, cursor.bit, cursor.acked) for name, cursor in known.items()],
        )
        into.execute("UPDATE meta SET value = ? WHERE key = 'last'", (last,))
    return Salvaged(salvaged, max(0, last - floor - found))


def _run(rowid: int, values: list[Value]) -> _Run | None:
    """A row of `runs` whose frames still unpack to what its columns say, else None."""
    match values:
        case [None, int(count), int(size), int() | float() as stored_at, int(sinks), bytes(frames)]:
            pass
        case _:
            return None
    if count < 1 or rowid < count:
        return None
    try:
        unpack(frames, count, size)
    except ValueError:
        return None
    return _Run(rowid, count, size, float(stored_at), sinks, frames)


def _cursor(values: list[Value]) -> tuple[str, Cursor] | None:
    match values:
        case [str(sink), int(bit), int(acked)] if bit > 0:
            return sink, Cursor(bit, acked)
        case _:
            return None
