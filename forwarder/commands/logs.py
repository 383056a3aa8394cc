"""`openalgo-forwarder logs`: the daemon's JSON log lines made readable and searchable.

Reads a file or standard input (`journalctl -u openalgo-forwarder -o cat | openalgo-forwarder
logs`), keeps the lines that match every filter given, and prints each as one aligned line, in
colour on a terminal. A line that is not a JSON object (a traceback, a library writing to stderr)
is always printed as it is, so nothing the daemon said can be hidden by a filter.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Final, TextIO

from forwarder.printable import printable, printable_json

__all__ = ["HELP", "LEVELS", "LogFilter", "add_arguments", "follow", "render", "run"]

HELP: Final = "pretty-print and filter the forwarder's JSON log lines"

LEVELS: Final = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}
_HEAD_KEYS: Final = frozenset({"timestamp", "level", "event", "exception"})
_ORDER_KEYS: Final = frozenset({"orderid", "order_id"})
_USER_KEYS: Final = frozenset({"user_id", "user"})
_ID_KEYS: Final = ("event_id", "first_id", "last_id")
_MAX_DEPTH: Final = 6

_RESET: Final = "\x1b[0m"
_BOLD: Final = "\x1b[1m"
_DIM: Final = "\x1b[2m"
_CYAN: Final = "\x1b[36m"
_LEVEL_COLOURS: Final = {
    "debug": "\x1b[34m",
    "info": "\x1b[32m",
    "warning": "\x1b[33m",
    "error": "\x1b[31m",
    "critical": "\x1b[1;31m",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `logs` subcommand's options, so the CLI mounts it without knowing them."""
    parser.add_argument(
        "file",
        nargs="?",
        default="-",
        help="a file of the forwarder's JSON log lines, or - (the default) for standard input, "
        "e.g. journalctl -u openalgo-forwarder -o cat | openalgo-forwarder logs",
    )
    parser.add_argument(
        "--level",
        type=str.lower,
        choices=list(LEVELS),
        help="show only this level and those above it",
    )
    parser.add_argument(
        "--event-id", help="lines about this event (event_id, or first_id/last_id of a batch)"
    )
    parser.add_argument("--order-id", help="lines carrying this order id, at any depth")
    parser.add_argument("--user", help="lines carrying this user id, at any depth")
    parser.add_argument("--sink", help="lines about this sink (kafka, socketio)")
    parser.add_argument(
        "-f",
        "--follow",
        action="store_true",
        help="keep reading as the file grows, like tail -f (standard input is read until it ends)",
    )
    parser.add_argument(
        "--no-color", action="store_true", help="never colour (also when NO_COLOR is set)"
    )


def run(args: argparse.Namespace, *, out: TextIO | None = None, stdin: TextIO | None = None) -> int:
    """Print the matching lines; 0 when done or interrupted, 1 when the file cannot be read."""
    out = sys.stdout if out is None else out
    stdin = sys.stdin if stdin is None else stdin
    line_filter = LogFilter.from_args(args)
    colour = not args.no_color and "NO_COLOR" not in os.environ and out.isatty()
    try:
        lines = _open(args.file, stdin, follow_file=args.follow)
    except OSError as exc:
        print(f"openalgo-forwarder logs: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 1
    try:
        for line in lines:
            shown = _show(line, line_filter, colour=colour)
            if shown is not None:
                out.write(shown + "\n")
                if args.follow:
                    out.flush()
        out.flush()
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:
        return 0
    return 0


def _open(name: str, stdin: TextIO, *, follow_file: bool) -> Iterable[str]:
    """The lines to read; a file is opened here so a bad path fails before any output."""
    if name == "-":
        return stdin
    path = Path(name)
    return follow(path) if follow_file else _lines(path.open(encoding="utf-8", errors="replace"))


def _show(line: str, line_filter: LogFilter, *, colour: bool) -> str | None:
    """The line as it should be printed, or None when a filter hides it."""
    text = line.rstrip("\r\n")
    record = _parse(text)
    if record is None:
        return printable(text)
    if not line_filter.matches(record):
        return None
    return render(record, colour=colour)


@dataclass(frozen=True)
class LogFilter:
    """Every condition a line must meet; None means that condition is not asked for."""

    min_level: int = 0
    event_id: str | None = None
    order_id: str | None = None
    user: str | None = None
    sink: str | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> LogFilter:
        return cls(
            min_level=LEVELS[args.level] if args.level else 0,
            event_id=args.event_id,
            order_id=args.order_id,
            user=args.user,
            sink=args.sink,
        )

    def matches(self, record: Mapping[str, Any]) -> bool:
        """Whether the record meets every condition; a record without a level counts as info."""
        level = LEVELS.get(str(record.get("level", "info")).lower(), LEVELS["info"])
        if level < self.min_level:
            return False
        if self.sink is not None and record.get("sink") != self.sink:
            return False
        if self.event_id is not None and not _about_event(record, self.event_id):
            return False
        if self.order_id is not None and self.order_id not in _values(record, _ORDER_KEYS):
            return False
        return self.user is None or self.user in _values(record, _USER_KEYS)


def render(record: Mapping[str, Any], *, colour: bool) -> str:
    """timestamp, level, event, then key=value in the order logged; a traceback on its own lines."""
    level = printable(str(record.get("level", "")).lower())
    head = [
        printable(str(record.get("timestamp", ""))),
        level.upper().ljust(8),
        printable(str(record.get("event", ""))).ljust(24),
    ]
    pairs = [
        (printable(key), _value(value)) for key, value in record.items() if key not in _HEAD_KEYS
    ]
    if colour:
        head[0] = f"{_DIM}{head[0]}{_RESET}"
        head[1] = f"{_LEVEL_COLOURS.get(level, '')}{head[1]}{_RESET}"
        head[2] = f"{_BOLD}{head[2]}{_RESET}"
        tail = [f"{_CYAN}{key}{_RESET}={value}" for key, value in pairs]
    else:
        tail = [f"{key}={value}" for key, value in pairs]
    line = " ".join(part for part in [*head, *tail] if part).rstrip()
    exception = record.get("exception")
    if exception:
        rows = str(exception).rstrip().split("\n")
        line += "\n" + "\n".join("    " + printable(row) for row in rows)
    return line


def follow(
    path: Path, *, poll_s: float = 0.25, stop: Callable[[], bool] = lambda: False
) -> Iterator[str]:
    """Lines of a file as it grows, like tail -F: a truncated or replaced file is read again."""
    return _follow(path, path.open("rb"), poll_s, stop)


def _follow(path: Path, handle: BinaryIO, poll_s: float, stop: Callable[[], bool]) -> Iterator[str]:
    pending = b""
    try:
        while True:
            chunk = handle.read(65536)
            if chunk:
                *complete, pending = (pending + chunk).split(b"\n")
                yield from (raw.decode("utf-8", "replace") for raw in complete)
                continue
            if stop():
                return
            try:
                current = path.stat()
            except FileNotFoundError:
                current = None
            if current is not None and current.st_ino != os.fstat(handle.fileno()).st_ino:
                handle.close()
                handle = path.open("rb")
                if pending:
                    yield pending.decode("utf-8", "replace")
                    pending = b""
            elif current is not None and current.st_size < handle.tell():
                handle.seek(0)
                pending = b""
            else:
                time.sleep(poll_s)
    finally:
        handle.close()


def _lines(handle: TextIO) -> Iterator[str]:
    with handle:
        yield from handle


def _parse(text: str) -> dict[str, Any] | None:
    if not text.startswith("{"):
        return None
    try:
        record = json.loads(text)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _value(value: Any) -> str:
    if isinstance(value, str) and value and not any(c.isspace() for c in value):
        return printable(value)
    return printable_json(value)


def _values(node: Any, keys: frozenset[str], depth: int = 0) -> set[str]:
    """Every value found under one of `keys` at any depth, as text, so 123 matches "123"."""
    found: set[str] = set()
    if depth > _MAX_DEPTH:
        return found
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key in keys and not isinstance(value, Mapping | list):
                found.add(str(value))
            found |= _values(value, keys, depth + 1)
    elif isinstance(node, list):
        for item in node:
            found |= _values(item, keys, depth + 1)
    return found


def _about_event(record: Mapping[str, Any], event_id: str) -> bool:
    """The event itself, a batch that starts or ends with it, or a list of ids that holds it."""
    if any(record.get(key) == event_id for key in _ID_KEYS):
        return True
    ids = record.get("event_ids")
    return isinstance(ids, list) and event_id in ids
