"""Text from events cannot drive the terminal it is printed on."""

from __future__ import annotations

import json

import pytest

from forwarder.printable import printable, printable_json

HOSTILE = "id\x1b]0;owned\x07\x1b[2J\x9b31m\u202eevil\u2028\ttab\nline\x7f\\x1b"
"""An OSC title change, a screen clear, a C1 CSI, a bidi override, a line separator, tab,
newline, DEL, and a backslash that spells an escape."""


def terminal_actors(text: str) -> list[str]:
    return [c for c in text if ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 or c in "\u202e\u2028"]


class TestPrintable:
    def test_every_control_and_format_character_is_escaped(self):
        shown = printable(HOSTILE)
        assert terminal_actors(shown) == []
        expected = "id\\x1b]0;owned\\x07\\x1b[2J\\x9b31m\\u202eevil\\u2028\\x09tab\\x0a"
        assert shown.startswith(expected)

    def test_a_backslash_is_doubled_so_no_escape_can_be_faked(self):
        """The frame's own text "\\x1b" must not read like an escaped ESC."""
        assert printable("\\x1b") == "\\\\x1b"
        assert printable("\x1b") == "\\x1b"

    @pytest.mark.parametrize("text", ["plain-id_42", "café 中文 ₹", "a b"])
    def test_readable_text_is_left_alone(self, text):
        assert printable(text) == text


class TestPrintableJson:
    def test_json_stays_valid_and_round_trips(self):
        """`dead-letters show` prints JSON: escaped, yet the same value once parsed."""
        value = {"event_id": HOSTILE, "data": ["₹ 1,00,000", {"note": "\x9b"}]}
        shown = printable_json(value, indent=2)
        assert terminal_actors(shown.replace("\n", "")) == []
        assert json.loads(shown) == value
        assert "₹ 1,00,000" in shown
