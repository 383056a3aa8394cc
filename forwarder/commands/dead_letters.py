"""`openalgo-forwarder dead-letters list|show|replay|purge`: act on what could not be delivered.

Records are named by their id (16 hex digits the forwarder stores in each; a line without one, from
an older forwarder, is named by the hash of its text), never by their position: the forwarder may
append or rotate between two commands, and an id still names the same record. `replay` pushes the
events that decode again to the running forwarder's endpoint, the way the emitter does, then
removes exactly those records (id and frame hash) from whichever file holds them; `purge` removes
records. Both rewrite a file under the lock the forwarder appends with, keeping its owner and mode;
run by another user than the file's owner (root aside), they refuse and say so.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgspec

from emitter.config import CurveKeys
from emitter.contract import InvalidEnvelope, decode_envelope
from forwarder.deadletter import FILE_NAME, Record, locked, rotated
from forwarder.errors import ForwarderError
from forwarder.ops.control import ControlError, control_path, query
from forwarder.printable import printable, printable_json
from forwarder.push import push_frames
from forwarder.settings import Settings

__all__ = ["HELP", "DeadLetterCommandError", "add_arguments", "read", "run"]

HELP: Final = "list, show, replay or purge what could not be delivered"

_SEND_TIMEOUT_MS: Final = 5000
_REASON_WIDTH: Final = 60
_MIN_PREFIX: Final = 4


class DeadLetterCommandError(ForwarderError):
    """The command cannot do what was asked; the message is the one line the operator sees."""


@dataclass(frozen=True)
class Letter:
    """One record of a dead-letter file."""

    id: str
    record: Record
    text: str
    """The line as stored, written back unchanged by a rewrite."""

    @property
    def raw(self) -> bytes:
        try:
            return base64.b64decode(self.record.raw, validate=True)
        except (binascii.Error, ValueError):
            return b""

    @property
    def key(self) -> tuple[str, str]:
        """What a rewrite matches: the id and the frame's hash (the line's, for an old one)."""
        return self.id, self.record.sha256 or _digest(self.text)

    def fields(self) -> dict[str, Any]:
        """The record's fields, its id as the commands name it."""
        return msgspec.structs.asdict(self.record) | {"id": self.id}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(title="actions", required=True, dest="action", metavar="ACTION")
    listing = actions.add_parser("list", help="one line per record: id, time, sink, event, reason")
    listing.add_argument("--json", action="store_true", help="the records as JSON lines")
    show = actions.add_parser("show", help="one record in full, the event decoded when it can be")
    show.add_argument("id", help="the record's id as `list` shows it (or its first digits)")
    for name, text in (
        ("replay", "send the chosen events to the running forwarder again, then remove them"),
        ("purge", "remove the chosen records"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("ids", nargs="*", metavar="ID", help="record ids (or first digits)")
        action.add_argument("--all", action="store_true", help="every record")


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Exit status 0 when the action did all it was asked, 1 otherwise (one line on stderr)."""
    path = settings.state_dir / FILE_NAME
    try:
        if not settings.state_dir.is_dir():
            raise DeadLetterCommandError(
                f"no state directory {settings.state_dir}: for a systemd service pass --service "
                "or --instance NAME, else the forwarder's --env-file"
            )
        letters = read(path)
        if args.action == "list":
            return _list(letters, as_json=args.json)
        if args.action == "show":
            return _show(_choose(letters, [args.id], every=False)[0])
        chosen = _choose(letters, args.ids, every=args.all)
        _check_owner(path)
        if args.action == "purge":
            removed = _remove(path, chosen)
            print(f"purged {removed} of {len(chosen)} records")
            return 0 if removed == len(chosen) else 1
        return _replay(path, settings, chosen)
    except DeadLetterCommandError as exc:
        print(f"openalgo-forwarder dead-letters: {exc}", file=sys.stderr)
        return 1


def read(path: Path) -> list[Letter]:
    """Every record of the rotated file then of the current one; unreadable lines are kept too."""
    letters: list[Letter] = []
    for source in (rotated(path), path):
        try:
            lines = source.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            continue
        except PermissionError as exc:
            raise DeadLetterCommandError(
                f"not allowed to read {source}: run this as the forwarder's user or as root"
            ) from exc
        letters.extend(_letter(line) for line in lines)
    return letters


def _letter(line: str) -> Letter:
    record = Record.read(line) or Record(reason="unreadable line in the dead-letter file")
    stored = record.id
    if stored is not None and len(stored) >= _MIN_PREFIX and stored.isalnum():
        return Letter(stored, record, line)
    return Letter(_digest(line)[:16], record, line)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def _event_name(letter: Letter) -> str:
    try:
        return decode_envelope(letter.raw).event
    except InvalidEnvelope:
        return "-"


def _list(letters: Sequence[Letter], *, as_json: bool) -> int:
    if as_json:
        for letter in letters:
            print(printable_json(letter.fields()))
        return 0
    if not letters:
        print("no dead letters")
        return 0
    rows = [("id", "time", "sink", "event id", "event", "reason")]
    for letter in letters:
        record = letter.record
        reason = record.reason
        rows.append(
            (
                printable(letter.id),
                printable(record.time or "-"),
                printable(record.sink or "-"),
                printable(record.event_id or "-"),
                printable(_event_name(letter)),
                printable(
                    reason if len(reason) <= _REASON_WIDTH else reason[: _REASON_WIDTH - 1] + "…"
                ),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[-1]
        )
    return 0


def _show(letter: Letter) -> int:
    shown = {k: v for k, v in letter.fields().items() if k != "raw"}
    if letter.record.truncated:
        shown["kept"] = f"the first {len(letter.raw)} of {letter.record.length} bytes"
    try:
        shown["envelope"] = msgspec.to_builtins(msgspec.structs.asdict(decode_envelope(letter.raw)))
    except InvalidEnvelope as exc:
        shown["decodes"] = f"no: {exc.reason}"
        shown["raw_hex"] = letter.raw[:256].hex(" ")
    print(printable_json(shown, indent=2))
    return 0


def _choose(letters: Sequence[Letter], ids: Sequence[str], *, every: bool) -> list[Letter]:
    if every == bool(ids):
        raise DeadLetterCommandError("name the records by id, or pass --all (not both)")
    if every:
        return list(letters)
    chosen = []
    for wanted in ids:
        found = [letter for letter in letters if letter.id.startswith(wanted)]
        if len(wanted) < _MIN_PREFIX or len(found) != 1:
            problem = "no dead letter" if not found else "more than one dead letter"
            if len(wanted) < _MIN_PREFIX:
                problem = f"give at least {_MIN_PREFIX} digits of an id, not"
            raise DeadLetterCommandError(
                f"{problem} {printable(wanted)!r}: `dead-letters list` shows the ids "
                f"({len(letters)} records)"
            )
        chosen.append(found[0])
    return chosen


def _check_owner(path: Path) -> None:
    """A rewrite by another user would leave files the forwarder may no longer append to."""
    for source in (path, rotated(path)):
        try:
            owner = source.stat().st_uid
        except FileNotFoundError:
            continue
        if os.geteuid() not in (0, owner):
            raise DeadLetterCommandError(
                f"{source} belongs to uid {owner}: run this as that user (the forwarder's) or "
                "as root, which keeps the file's owner"
            )


def _replay(path: Path, settings: Settings, chosen: Sequence[Letter]) -> int:
    try:
        query(control_path(settings.endpoint, settings.state_dir))
    except ControlError as exc:
        raise DeadLetterCommandError(f"the forwarder must be running to replay: {exc}") from exc
    sendable = []
    for letter in chosen:
        if letter.record.truncated:
            print(f"{letter.id}: kept, only its first {len(letter.raw)} bytes were kept")
            continue
        try:
            decode_envelope(letter.raw)
        except InvalidEnvelope as exc:
            print(f"{letter.id}: kept, it still does not decode ({printable(exc.reason)})")
            continue
        sendable.append(letter)
    sent = _push(settings, [letter.raw for letter in sendable])
    _remove(path, sendable[:sent])
    print(f"replayed {sent} of {len(chosen)} records to {settings.endpoint}")
    return 0 if sent == len(chosen) else 1


def _push(settings: Settings, frames: Sequence[bytes]) -> int:
    """Hand the frames to the forwarder as the emitter does; how many ZeroMQ took. On a CURVE
    endpoint the command speaks with the forwarder's own keys, which the forwarder accepts."""
    curve = settings.curve
    own = None if curve is None else CurveKeys(curve.public, curve.secret, curve.public)
    return push_frames(
        settings.endpoint,
        frames,
        curve=own,
        linger_ms=_SEND_TIMEOUT_MS,
        send_timeout_ms=_SEND_TIMEOUT_MS,
    )


def _remove(path: Path, letters: Iterable[Letter]) -> int:
    """Remove those records (matched by id and hash) from whichever file holds them now, under
    the forwarder's append lock; how many were found."""
    keys = {letter.key for letter in letters}
    removed = 0
    with locked(path):
        for source in (rotated(path), path):
            try:
                lines = source.read_text(errors="replace").splitlines()
            except FileNotFoundError:
                continue
            kept = [line for line in lines if _letter(line).key not in keys]
            if len(kept) < len(lines):
                removed += len(lines) - len(kept)
                _rewrite(source, kept)
    return removed


def _rewrite(source: Path, lines: Sequence[str]) -> None:
    """Replace the file's content, keeping its owner and mode (the forwarder must still append)."""
    info = source.stat()
    fresh = source.with_name(source.name + ".new")
    fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        if os.geteuid() == 0:
            os.fchown(fd, info.st_uid, info.st_gid)
        os.fchmod(fd, info.st_mode & 0o7777)
        with os.fdopen(fd, "w", closefd=False) as out:
            out.writelines(line + "\n" for line in lines)
    finally:
        os.close(fd)
    os.replace(fresh, source)
