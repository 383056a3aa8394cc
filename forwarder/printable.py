"""Text from events made safe for a terminal: control and format characters shown as escapes.

Values the commands print (event ids, names, reasons, log fields) come from frames anyone with
access to the socket could send; an ESC sequence in one would move the cursor, retitle the window
or hide lines. Every C0 and C1 control (newline and tab included: one record is one line), DEL,
the invisible format characters (bidirectional overrides among them), the line and paragraph
separators and unassigned or private code points are written as escapes: \\xNN, \\uNNNN or
\\UNNNNNNNN in plain text, where a backslash is doubled so no escape can be faked; \\uNNNN in JSON,
which stays valid JSON.
"""

from __future__ import annotations

import json
import unicodedata
from functools import cache
from typing import Any, Final

__all__ = ["printable", "printable_json"]

_UNSAFE: Final = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})


def _unsafe(char: str) -> bool:
    return unicodedata.category(char) in _UNSAFE


@cache
def _text_escape(char: str) -> str:
    if char == "\\":
        return "\\\\"
    if not _unsafe(char):
        return char
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


@cache
def _json_escape(char: str) -> str:
    if char == "\n" or not _unsafe(char):  # json.dumps escapes the C0 controls in strings itself
        return char
    return json.dumps(char)[1:-1]


def printable(text: str) -> str:
    """`text` with every character a terminal would act on, or not show, escaped."""
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(map(_text_escape, text))


def printable_json(value: Any, *, indent: int | None = None) -> str:
    """`value` as JSON that keeps readable non-ASCII text yet escapes what a terminal acts on."""
    text = json.dumps(value, indent=indent, ensure_ascii=False)
    return "".join(map(_json_escape, text))
