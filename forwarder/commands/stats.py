"""`openalgo-forwarder stats`: the running forwarder's counters, per sink, from its socket."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Final

from forwarder.ops.control import ControlError, query
from forwarder.printable import printable
from forwarder.stats import SinkSnapshot, Snapshot

__all__ = ["HELP", "add_arguments", "format_duration", "render_stats", "run"]

HELP: Final = "ask the running forwarder for its counters, per sink"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the counters as JSON")
    parser.add_argument(
        "--socket",
        type=Path,
        metavar="PATH",
        help="the control socket (default: control.sock beside the ipc endpoint, else in the "
        "state directory)",
    )


def run(path: Path, *, as_json: bool) -> int:
    """Exit status 0 with the counters printed, 1 with one line on stderr saying what to check."""
    try:
        snapshot = query(path)
    except ControlError as exc:
        print(f"openalgo-forwarder: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(snapshot.as_dict(), indent=2) if as_json else render_stats(snapshot))
    return 0


def render_stats(snapshot: Snapshot) -> str:
    """The snapshot as a table an operator reads at a glance; `--json` gives the raw numbers."""
    lines = [
        f"forwarder pid {snapshot.pid}, up {format_duration(snapshot.uptime_s)}",
        f"received {snapshot.received:,} events, {snapshot.decode_failures:,} decode failures",
    ]
    sinks = snapshot.sinks
    if not sinks:
        return "\n".join([*lines, "", "no sink configured"]) + "\n"
    header = ("sink", "delivered", "retried", "waiting", "oldest", "dead-lettered", "dropped")
    rows = [header]
    states = []
    for name, sink in sinks.items():
        oldest = sink.oldest_age_s
        rows.append(
            (
                printable(name),
                f"{sink.delivered:,}",
                f"{sink.retried:,}",
                f"{sink.waiting:,}",
                "-" if oldest is None else format_duration(oldest),
                f"{sink.dead_lettered:,}",
                f"{sink.dropped:,}",
            )
        )
        states.append(_state(sink))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines.append("")
    for row, state in zip(rows, ["state", *states], strict=True):
        cells = [row[0].ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join([*cells, state]))
    return "\n".join(lines) + "\n"


def format_duration(seconds: float) -> str:
    """Short and exact enough: 0.4 s, 42 s, 3m 05s, 2h 01m, 3d 04h."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours:02d}h"


def _state(sink: SinkSnapshot) -> str:
    if not sink.configured:
        return "not in ORDER_EVENT_MODE: kept until it is again"
    since = sink.retrying_since_s
    if since is None:
        return "delivering"
    error = sink.last_error
    detail = f": {printable(str(error))}" if error else ""
    return f"retrying for {format_duration(since)}{detail}"
