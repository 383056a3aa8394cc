"""What `check` reads of a buffer file: read-only, so a running forwarder is not disturbed."""

from __future__ import annotations

import sqlite3
from collections.abc import Collection
from pathlib import Path

from forwarder.store._file import check_layout, connect_inspector, cursors, waiting

__all__ = ["describe"]


def describe(path: Path, max_bytes: int, configured: Collection[str]) -> str:
    """Events waiting in all and per sink, bytes used; sinks outside ORDER_EVENT_MODE are named.

    Raises RuntimeError for a file that would be set aside at start.
    """
    if not path.exists():
        return f"{path} (created at start), up to {max_bytes:,} bytes"
    db = connect_inspector(path)
    try:
        check_layout(db)
        known = cursors(db)
        per_sink = {name: waiting(db, cursor)[0] for name, cursor in known.items()}
        # An event counts once however many sinks still need it.
        needed = [
            "CASE WHEN sinks & ? THEN MIN(count, MAX(0, last_seq - ?)) ELSE 0 END" for _ in known
        ]
        parameters = [value for cursor in known.values() for value in (cursor.bit, cursor.acked)]
        total, size = db.execute(
            f"SELECT COALESCE(SUM(MAX({', '.join([*needed, '0', '0'])})), 0),"  # noqa: S608 - no input
            " COALESCE(SUM(size), 0) FROM runs",
            parameters,
        ).fetchone()
    except sqlite3.DatabaseError as exc:
        raise RuntimeError(f"{path} is damaged ({exc}): it will be set aside at start") from exc
    finally:
        db.close()
    sinks = []
    for name, count in per_sink.items():
        if name in configured:
            sinks.append(f"{name} {count:,}")
        elif count:
            sinks.append(
                f"{name} {count:,}, not in ORDER_EVENT_MODE: delivered once it is again, "
                f"or dropped by `openalgo-forwarder backlog discard {name}`"
            )
    detail = f" ({'; '.join(sinks)})" if sinks else ""
    return f"{path}: {total:,} events waiting{detail}, {size:,} of {max_bytes:,} bytes"
