"""`openalgo-forwarder dead-letters list|show|replay|purge`: act on what could not be delivered.

Records are numbered in file order, the rotated file (`.1`) first. `replay` pushes the events that
decode again to the running forwarder's endpoint, the way the emitter does, and removes them from
the file; `purge` removes records. Both rewrite the file under the lock the forwarder appends with.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgspec
import zmq

from emitter.config import CurveKeys, curve_options
from emitter.contract import InvalidEnvelope, decode_envelope
from forwarder.control import ControlError, control_path, query
from forwarder.deadletter import FILE_NAME, locked, rotated
from forwarder.printable import printable, printable_json
from forwarder.settings import Settings

__all__ = ["add_dead_letter_arguments", "run_dead_letters"]

_SEND_TIMEOUT_MS: Final = 5000
_REASON_WIDTH: Final = 60


@dataclass(frozen=True)
class Letter:
    """One record of the file, numbered from 1."""

    number: int
    fields: dict[str, Any]
    text: str
    """The line as stored, written back unchanged by a rewrite."""

    @property
    def raw(self) -> bytes:
        try:
            return base64.b64decode(str(self.fields.get("raw", "")), validate=True)
        except (binascii.Error, ValueError):
            return b""


def add_dead_letter_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(title="actions", required=True, dest="action", metavar="ACTION")
    listing = actions.add_parser("list", help="one line per record: number, time, sink, reason")
    listing.add_argument("--json", action="store_true", help="the records as JSON lines")
    show = actions.add_parser("show", help="one record in full, the event decoded when it can be")
    show.add_argument("number", type=int)
    for name, text in (
        ("replay", "send the chosen events to the running forwarder again, then remove them"),
        ("purge", "remove the chosen records"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("numbers", type=int, nargs="*", metavar="NUMBER")
        action.add_argument("--all", action="store_true", help="every record")


def run_dead_letters(args: argparse.Namespace, settings: Settings) -> int:
    """Exit status 0 when the action did all it was asked, 1 otherwise."""
    path = settings.state_dir / FILE_NAME
    letters = read(path)
    if args.action == "list":
        return _list(letters, as_json=args.json)
    if args.action == "show":
        return _show(letters, args.number)
    chosen = _choose(letters, args.numbers, every=args.all)
    if chosen is None:
        return 1
    if args.action == "purge":
        _remove(path, {letter.number for letter in chosen})
        print(f"purged {len(chosen)} of {len(letters)} records")
        return 0
    return _replay(path, settings, chosen)


def read(path: Path) -> list[Letter]:
    """Every record of the rotated file then of the current one; unreadable lines are kept too."""
    letters: list[Letter] = []
    for source in (rotated(path), path):
        try:
            lines = source.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            continue
        for line in lines:
            try:
                fields = json.loads(line)
            except ValueError:
                fields = None
            if not isinstance(fields, dict):
                fields = {"reason": "unreadable line in the dead-letter file"}
            letters.append(Letter(len(letters) + 1, fields, line))
    return letters


def _event_name(letter: Letter) -> str:
    try:
        return decode_envelope(letter.raw).event
    except InvalidEnvelope:
        return "-"


def _list(letters: Sequence[Letter], *, as_json: bool) -> int:
    if as_json:
        for letter in letters:
            print(printable_json({"number": letter.number, **letter.fields}))
        return 0
    if not letters:
        print("no dead letters")
        return 0
    rows = [("#", "time", "sink", "event id", "event", "reason")]
    for letter in letters:
        f = letter.fields
        reason = str(f.get("reason", ""))
        rows.append(
            (
                str(letter.number),
                printable(str(f.get("time", "-"))),
                printable(str(f.get("sink") or "-")),
                printable(str(f.get("event_id") or "-")),
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


def _show(letters: Sequence[Letter], number: int) -> int:
    letter = _find(letters, number)
    if letter is None:
        return 1
    shown = {k: v for k, v in letter.fields.items() if k != "raw"}
    try:
        shown["envelope"] = msgspec.to_builtins(msgspec.structs.asdict(decode_envelope(letter.raw)))
    except InvalidEnvelope as exc:
        shown["decodes"] = f"no: {exc.reason}"
        shown["raw_hex"] = letter.raw[:256].hex(" ")
    print(printable_json(shown, indent=2))
    return 0


def _find(letters: Sequence[Letter], number: int) -> Letter | None:
    for letter in letters:
        if letter.number == number:
            return letter
    print(f"no dead letter number {number}: there are {len(letters)}", file=sys.stderr)
    return None


def _choose(
    letters: Sequence[Letter], numbers: Sequence[int], *, every: bool
) -> list[Letter] | None:
    if every == bool(numbers):
        print("name the records by number, or pass --all (not both)", file=sys.stderr)
        return None
    if every:
        return list(letters)
    chosen = [_find(letters, number) for number in numbers]
    return None if any(letter is None for letter in chosen) else [c for c in chosen if c]


def _replay(path: Path, settings: Settings, chosen: Sequence[Letter]) -> int:
    try:
        query(control_path(settings.endpoint, settings.state_dir))
    except ControlError as exc:
        print(f"the forwarder must be running to replay: {exc}", file=sys.stderr)
        return 1
    sendable = []
    for letter in chosen:
        try:
            decode_envelope(letter.raw)
        except InvalidEnvelope as exc:
            print(f"{letter.number}: kept, it still does not decode ({exc.reason})")
            continue
        sendable.append(letter)
    sent = _push(settings, [letter.raw for letter in sendable])
    _remove(path, {letter.number for letter in sendable[:sent]})
    print(f"replayed {sent} of {len(chosen)} records to {settings.endpoint}")
    return 0 if sent == len(chosen) else 1


def _push(settings: Settings, frames: Sequence[bytes]) -> int:
    """Hand the frames to the forwarder as the emitter does; how many ZeroMQ took. On a CURVE
    endpoint the command speaks with the forwarder's own keys, which the forwarder accepts."""
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.setsockopt(zmq.SNDTIMEO, _SEND_TIMEOUT_MS)
    push.setsockopt(zmq.LINGER, _SEND_TIMEOUT_MS)
    curve = settings.curve
    if curve is not None:
        for option, value in curve_options(
            CurveKeys(curve.public, curve.secret, curve.public)
        ).items():
            push.setsockopt(option, value)
    try:
        push.connect(settings.endpoint)
        for sent, frame in enumerate(frames):
            try:
                push.send(frame)
            except zmq.Again:
                return sent
        return len(frames)
    finally:
        push.close()
        context.term()


def _remove(path: Path, numbers: set[int]) -> None:
    """Rewrite the file without those records, under the forwarder's append lock."""
    with locked(path):
        kept = [letter.text for letter in read(path) if letter.number not in numbers]
        fresh = path.with_name(path.name + ".new")
        fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.writelines(line + "\n" for line in kept)
        os.replace(fresh, path)
        rotated(path).unlink(missing_ok=True)
