"""Env files read exactly as systemd's `EnvironmentFile=` reads them: `--env-file` means the same.

A port of systemd's `parse_env_file_internal` (src/basic/env-file.c) and the clean-up applied
after it (`strv_env_clean`): comments start a line with `#` or `;`; an unquoted value keeps its
interior whitespace, an inline `# text` included, and a backslash keeps the next character (a
backslash at the end of a line joins the next one); single quotes take everything verbatim; double
quotes know the escapes \\" \\\\ \\` \\$ and keep any other backslash; text right after a closing
quote is appended; nothing is expanded. A line whose name is not a valid variable name, or that
has no `=`, is ignored; the last of two assignments wins. A NUL byte, or invalid UTF-8 in a name or
value, makes systemd refuse the whole file, so it is an error here too.

Each assignment also carries notes on the places where a reader used to shell or python-dotenv
syntax would expect something else, so `check` can warn about that line.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = ["EnvFile", "EnvFileError", "parse_env_file", "read_env_file"]

_NEWLINE: Final = frozenset(b"\n\r")
_WHITESPACE: Final = frozenset(b" \t\n\r")
_COMMENTS: Final = frozenset(b"#;")
_SHELL_NEED_ESCAPE: Final = frozenset(b'"\\`$')
_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NAME_START: Final = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")

NOTE_INLINE_COMMENT: Final = (
    "systemd keeps '#' and what follows it as part of the value (it is no comment there)"
)
NOTE_AFTER_QUOTE: Final = "systemd appends the text after the closing quote to the value"
NOTE_UNQUOTED_BACKSLASH: Final = "systemd drops a backslash in an unquoted value"
NOTE_QUOTED_ESCAPE: Final = (
    "systemd keeps backslash sequences such as \\n as written inside double quotes"
)
NOTE_NO_EXPANSION: Final = "systemd does not expand $VARIABLES: the value keeps the '$' as written"
NOTE_COMMENT_CONTINUES: Final = (
    "this comment ends in a backslash: systemd before version 254 also ignores the next line"
)


State = Callable[[int], "State"]


class EnvFileError(ValueError):
    """The file cannot be used at all; systemd would refuse to start the service with it."""


@dataclass(frozen=True)
class EnvFile:
    """The variables systemd would set, and every line where a reader might expect otherwise."""

    values: dict[str, str]
    notes: list[tuple[int, str]]


class _Parser:
    """The state machine of systemd's parser, one method per state, over bytes as systemd reads."""

    def __init__(self) -> None:
        self.assignments: list[tuple[int, bytes, bytes | None, list[str]]] = []
        self.notes: list[tuple[int, str]] = []
        self.line = 1
        self._start = 1
        self._key = bytearray()
        self._value: bytearray | None = None
        self._key_ws: int | None = None
        self._value_ws: int | None = None
        self._entry_notes: list[str] = []
        self._after_quote = False
        self._spaced = False
        self._dollar = False

    def run(self, data: bytes) -> None:
        state: State = self._pre_key
        for c in data:
            state = state(c)
            if c == 0x0A:
                self.line += 1
        if state == self._value_state:
            self._push(chomp=True)
        elif state == self._key_state:
            self.notes.append((self._start, self._no_assignment()))
        elif state not in (self._pre_key, self._comment, self._comment_escape):
            self._push(chomp=False)

    def _pre_key(self, c: int) -> State:
        if c in _COMMENTS:
            return self._comment
        if c in _WHITESPACE:
            return self._pre_key
        self._start = self.line
        self._key_ws = None
        self._key.append(c)
        return self._key_state

    def _key_state(self, c: int) -> State:
        if c in _NEWLINE:
            self.notes.append((self._start, self._no_assignment()))
            self._reset()
            return self._pre_key
        if c == ord("="):
            self._value_ws = None
            self._spaced = False
            return self._pre_value
        if c not in _WHITESPACE:
            self._key_ws = None
        elif self._key_ws is None:
            self._key_ws = len(self._key)
        self._key.append(c)
        return self._key_state

    def _pre_value(self, c: int) -> State:
        if c in _NEWLINE:
            self._push(chomp=False)
            return self._pre_key
        if c in _WHITESPACE:
            self._spaced = True
            return self._pre_value
        if self._after_quote:
            self._note(NOTE_AFTER_QUOTE)
        if c == ord("'"):
            return self._single_quote
        if c == ord('"'):
            return self._double_quote
        if c == ord("\\"):
            return self._value_escape
        if c == ord("#") and self._spaced:
            self._note(NOTE_INLINE_COMMENT)
        self._append(c, expandable=True)
        return self._value_state

    def _value_state(self, c: int) -> State:
        if c in _NEWLINE:
            self._push(chomp=True)
            return self._pre_key
        if c == ord("\\"):
            self._value_ws = None
            return self._value_escape
        if c not in _WHITESPACE:
            if c == ord("#") and self._value_ws is not None:
                self._note(NOTE_INLINE_COMMENT)
            self._value_ws = None
        elif self._value_ws is None:
            self._value_ws = 0 if self._value is None else len(self._value)
        self._append(c, expandable=True)
        return self._value_state

    def _value_escape(self, c: int) -> State:
        if c not in _NEWLINE:
            self._note(NOTE_UNQUOTED_BACKSLASH)
            self._append(c)
        return self._value_state

    def _single_quote(self, c: int) -> State:
        if c == ord("'"):
            self._after_quote = True
            return self._pre_value
        self._append(c)
        return self._single_quote

    def _double_quote(self, c: int) -> State:
        if c == ord('"'):
            self._after_quote = True
            return self._pre_value
        if c == ord("\\"):
            return self._double_quote_escape
        self._append(c, expandable=True)
        return self._double_quote

    def _double_quote_escape(self, c: int) -> State:
        if c in _SHELL_NEED_ESCAPE:
            self._append(c)
        elif c != 0x0A:
            self._note(NOTE_QUOTED_ESCAPE)
            self._append(ord("\\"))
            self._append(c)
        return self._double_quote

    def _comment(self, c: int) -> State:
        if c == ord("\\"):
            return self._comment_escape
        return self._pre_key if c in _NEWLINE else self._comment

    def _comment_escape(self, c: int) -> State:
        # Since systemd 254 a backslash-newline ends the comment; before, it continued it.
        if c in _NEWLINE:
            self.notes.append((self.line, NOTE_COMMENT_CONTINUES))
            return self._pre_key
        return self._comment

    def _append(self, c: int, *, expandable: bool = False) -> None:
        if self._value is None:
            self._value = bytearray()
        if self._dollar and (c in _NAME_START or c == ord("{")):
            self._note(NOTE_NO_EXPANSION)
        self._dollar = expandable and c == ord("$")
        self._value.append(c)

    def _note(self, note: str) -> None:
        if note not in self._entry_notes:
            self._entry_notes.append(note)

    def _push(self, *, chomp: bool) -> None:
        key = bytes(self._key if self._key_ws is None else self._key[: self._key_ws])
        value = None if self._value is None else bytes(self._value)
        if chomp and value is not None and self._value_ws is not None:
            value = value[: self._value_ws]
        self.assignments.append((self._start, key, value, self._entry_notes))
        self._reset()

    def _reset(self) -> None:
        self._key = bytearray()
        self._value = None
        self._entry_notes = []
        self._after_quote = False
        self._dollar = False

    def _no_assignment(self) -> str:
        text = self._key.decode("utf-8", "replace").strip()
        return f"no '=' in {text[:40]!r}: systemd ignores this line"


def parse_env_file(data: bytes) -> EnvFile:
    """The variables systemd's EnvironmentFile= would set from these bytes, last one winning."""
    nul = data.find(b"\0")
    if nul >= 0:
        line = data.count(b"\n", 0, nul) + 1
        raise EnvFileError(f"line {line}: a NUL byte; systemd refuses such a file")
    parser = _Parser()
    parser.run(data)
    values: dict[str, str] = {}
    notes = list(parser.notes)
    for line, raw_key, raw_value, entry_notes in parser.assignments:
        try:
            name = raw_key.decode("utf-8")
            value = "" if raw_value is None else raw_value.decode("utf-8")
        except UnicodeDecodeError:
            raise EnvFileError(f"line {line}: invalid UTF-8; systemd refuses such a file") from None
        if not _NAME.fullmatch(name):
            reason = (
                "drop 'export ': systemd reads 'export NAME' as the name and ignores the line"
                if name.startswith("export ")
                else f"{name[:40]!r} is not a variable name: systemd ignores this line"
            )
            notes.append((line, reason))
            continue
        notes.extend((line, f"{name}: {note}") for note in entry_notes)
        values.pop(name, None)
        values[name] = value
    notes.sort(key=lambda item: item[0])
    return EnvFile(values, notes)


def read_env_file(path: Path) -> EnvFile:
    """`parse_env_file` of a file; EnvFileError when it cannot be read."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise EnvFileError(f"cannot read {path}: {exc.strerror}") from exc
    return parse_env_file(data)
