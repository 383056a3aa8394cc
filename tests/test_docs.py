"""The README's configuration table, .sample.env and the code must name the same settings."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SETTING = re.compile(r"\b(ORDER_EVENT_MODE|(?:FORWARDER|EMITTER|KAFKA|SOCKETIO|LOG)_[A-Z0-9_]+)\b")
NOT_SETTINGS = {"KAFKA_TEST_BOOTSTRAP_SERVERS"}


def sample_env() -> dict[str, str]:
    entries = {}
    for line in (ROOT / ".sample.env").read_text().splitlines():
        match = re.match(r"^([A-Z][A-Z0-9_]*)=(.*)$", line)
        if match:
            entries[match.group(1)] = match.group(2)
    return entries


def readme_table() -> dict[str, str]:
    entries = {}
    for line in (ROOT / "README.md").read_text().splitlines():
        match = re.match(r"^\| `([A-Z][A-Z0-9_]*)` \| (?:`([^`]*)`|\(empty\)) \|", line)
        if match:
            entries[match.group(1)] = match.group(2) or ""
    return entries


def settings_in_code() -> set[str]:
    found: set[str] = set()
    for package in ("emitter", "forwarder"):
        for path in (ROOT / package).rglob("*.py"):
            found.update(m.group(1) for m in SETTING.finditer(path.read_text()))
    return found - NOT_SETTINGS


class TestConfigurationDocs:
    def test_readme_table_matches_sample_env(self):
        """Every variable in .sample.env is in the README table with the same default, and back."""
        assert readme_table() == sample_env()

    def test_every_setting_the_code_reads_is_documented(self):
        """A setting read by the code but absent from .sample.env could never be discovered."""
        assert settings_in_code() - set(sample_env()) == set()

    def test_every_documented_setting_is_read_by_the_code(self):
        """A documented setting that nothing reads would mislead the operator."""
        assert set(sample_env()) - settings_in_code() == set()
