"""Env files mean what systemd's EnvironmentFile= makes of them: one table, both parsers agree."""

from __future__ import annotations

import pytest

from forwarder.envfile import (
    NOTE_AFTER_QUOTE,
    NOTE_COMMENT_CONTINUES,
    NOTE_INLINE_COMMENT,
    NOTE_NO_EXPANSION,
    NOTE_QUOTED_ESCAPE,
    NOTE_UNQUOTED_BACKSLASH,
    EnvFileError,
    parse_env_file,
)
from tests.support import systemd

CASES: list[tuple[str, bytes, dict[str, str]]] = [
    ("plain", b"A=1\n", {"A": "1"}),
    ("no final newline", b"A=1", {"A": "1"}),
    ("inline comment kept", b"A=1 # note\n", {"A": "1 # note"}),
    ("hash without space", b"A=a#b\n", {"A": "a#b"}),
    ("value starting with a hash", b"A= #x\n", {"A": "#x"}),
    ("text after a double quote", b'A="x y" # note\n', {"A": "x y# note"}),
    ("text glued to a quote", b'A="x"y\n', {"A": "xy"}),
    ("single quotes verbatim", b"A='a \\n $B \"c\"'\n", {"A": 'a \\n $B "c"'}),
    ("two single-quoted parts", b"A='it''s'\n", {"A": "its"}),
    ("double-quote escapes", b'A="q\\"b\\\\s\\$d\\`t\\nn"\n', {"A": 'q"b\\s$d`t\\nn'}),
    ("double quotes span lines", b'A="line1\nline2"\n', {"A": "line1\nline2"}),
    ("backslash-newline in double quotes", b'A="ab\\\ncd"\n', {"A": "abcd"}),
    ("unterminated double quote", b'A="open\nB=2\n', {"A": "open\nB=2\n"}),
    ("continuation line", b"A=first\\\nsecond\n", {"A": "firstsecond"}),
    ("escaped space", b"A=a\\ b\n", {"A": "a b"}),
    ("escaped hash", b"A=\\#x\n", {"A": "#x"}),
    ("unquoted backslash dropped", b"A=a\\qb\n", {"A": "aqb"}),
    ("whitespace around", b"  A  =   spaced value  \t\n", {"A": "spaced value"}),
    ("interior tab kept", b"A=a\tb\n", {"A": "a\tb"}),
    ("spaces around a quoted value", b"A =  'x'  \n", {"A": "x"}),
    ("CRLF line ends", b"A=x\r\nB='y'\r\n", {"A": "x", "B": "y"}),
    ("comments", b"# one\n; two\n   # three\nA=1\n", {"A": "1"}),
    ("no expansion", b"A=$HOME/x\nB=${USER}\n", {"A": "$HOME/x", "B": "${USER}"}),
    ("empty value", b"A=\n", {"A": ""}),
    ("last one wins", b"A=1\nA=2\n", {"A": "2"}),
    ("export prefix ignored", b"export A=1\nB=2\n", {"B": "2"}),
    ("invalid names ignored", b"A-B=1\n1A=2\nA B=3\nC=4\n", {"C": "4"}),
    ("line without =", b"JUSTTEXT\nA=1\n", {"A": "1"}),
    ("unicode", "A=é ü\n".encode(), {"A": "é ü"}),
    ("comment ending in a backslash", b"#c\\\nA=1\nB=2\n", {"A": "1", "B": "2"}),
]
"""(name, file contents, what systemd sets) for every rule systemd's parser has."""

SINCE: dict[str, tuple[int, dict[str, str]]] = {
    "comment ending in a backslash": (254, {"B": "2"}),
}
"""Cases systemd changed: from which version the table holds, and what earlier versions set."""


class TestTheTable:
    @pytest.mark.parametrize(("name", "text", "expected"), CASES, ids=[c[0] for c in CASES])
    def test_the_forwarder_reads_each_case_as_the_table_says(self, name, text, expected):
        """--env-file and the daemon's unit must agree on every variable."""
        assert parse_env_file(text).values == expected

    @pytest.mark.parametrize(("name", "text", "expected"), CASES, ids=[c[0] for c in CASES])
    def test_systemd_reads_each_case_as_the_table_says(self, tmp_path, name, text, expected):
        """The table is systemd's behaviour: its own parser (load_env_file, as EnvironmentFile=
        calls it) is run on every case."""
        path = tmp_path / "case.env"
        path.write_bytes(text)
        since, before = SINCE.get(name, (0, expected))
        assert systemd.environment_file(path) == (
            expected if systemd.version() >= since else before
        )

    @pytest.mark.parametrize(
        ("text", "reason"),
        [
            (b"A=1\nB=\xff\xfe\n", "line 2: invalid UTF-8"),
            (b"A=1\nB=2\x00\n", "line 2: a NUL byte"),
        ],
    )
    def test_a_file_systemd_refuses_is_refused_by_both(self, tmp_path, text, reason):
        """systemd will not start a service whose env file has invalid UTF-8 or a NUL byte."""
        path = tmp_path / "bad.env"
        path.write_bytes(text)
        with pytest.raises(systemd.RefusedError):
            systemd.environment_file(path)
        with pytest.raises(EnvFileError, match=reason):
            parse_env_file(text)


class TestNotes:
    @pytest.mark.parametrize(
        ("text", "line", "note"),
        [
            (b"X=1\nA=1 # note\n", 2, NOTE_INLINE_COMMENT),
            (b'A="x" # note\n', 1, NOTE_AFTER_QUOTE),
            (b"A=a\\qb\n", 1, NOTE_UNQUOTED_BACKSLASH),
            (b'A="a\\nb"\n', 1, NOTE_QUOTED_ESCAPE),
            (b"A=$HOME\n", 1, NOTE_NO_EXPANSION),
            (b'A="${HOME}"\n', 1, NOTE_NO_EXPANSION),
            (b"\n\n#c\\\nA=1\n", 3, NOTE_COMMENT_CONTINUES),
        ],
    )
    def test_each_line_read_otherwise_by_a_shell_or_dotenv_is_noted(self, text, line, note):
        """`check` warns where a reader used to shell or python-dotenv would expect otherwise."""
        assert any(at == line and note in text_ for at, text_ in parse_env_file(text).notes)

    @pytest.mark.parametrize(
        ("text", "fragment"),
        [
            (b"export A=1\n", "drop 'export '"),
            (b"A-B=1\n", "'A-B' is not a variable name"),
            (b"JUSTTEXT\n", "no '=' in 'JUSTTEXT'"),
        ],
    )
    def test_an_ignored_line_is_noted(self, text, fragment):
        """A line systemd skips is almost always a mistake."""
        [(line, note)] = parse_env_file(text).notes
        assert line == 1
        assert fragment in note

    @pytest.mark.parametrize(
        "text",
        [
            b"A=1\nB='x # y'\nC=\"a b\"\nD='$HOME'\nE=\"a\\$b\"\n# comment\n\nF=\n",
            b"A=one\\\ntwo\n",
        ],
    )
    def test_plain_lines_have_no_notes(self, text):
        """Quoted hashes, single-quoted dollars, escaped dollars and continuations are clear."""
        assert parse_env_file(text).notes == []
