"""The dead-letter file: record format, permissions, concurrency and a full disk."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from emitter.config import ConfigError
from emitter.contract import decode_envelope, encode_envelope
from forwarder.deadletter import (
    FILE_NAME,
    HEAD_BYTES,
    DeadLetters,
    Record,
)
from forwarder.stats import Stats
from harness.events import numbered


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def dead_letters(tmp_path):
    letters = DeadLetters(tmp_path / "state", Stats())
    letters.prepare()
    return letters


class TestDeadLetters:
    def test_a_record_holds_time_reason_sink_id_and_the_frame_in_base64(self, dead_letters):
        """Everything needed to understand and replay a refused frame is on its line."""
        before = datetime.now(UTC)
        frame = encode_envelope(numbered(7))
        dead_letters.record(frame, "record too large", sink="kafka", event_id="ev-000007")
        [record] = records(dead_letters.path)
        assert set(record) == {
            "id",
            "time",
            "reason",
            "sink",
            "event_id",
            "length",
            "sha256",
            "truncated",
            "raw",
        }
        assert (record["length"], record["truncated"]) == (len(frame), False)
        assert record["sha256"] == hashlib.sha256(frame).hexdigest()
        assert before <= datetime.fromisoformat(record["time"]) <= datetime.now(UTC)
        assert record["time"].endswith("Z")
        assert (record["reason"], record["sink"], record["event_id"]) == (
            "record too large",
            "kafka",
            "ev-000007",
        )
        assert decode_envelope(base64.b64decode(record["raw"])) == decode_envelope(frame)

    def test_an_undecodable_frame_has_no_sink_and_keeps_its_exact_bytes(self, dead_letters):
        """Garbage is kept byte for byte, with sink null."""
        garbage = bytes(range(256)) + b"\x00\xff"
        dead_letters.record(garbage, "Expected `array`, got `int`")
        [record] = records(dead_letters.path)
        assert record["sink"] is None
        assert record["event_id"] is None
        assert base64.b64decode(record["raw"]) == garbage

    def test_the_state_directory_is_created_private_and_the_file_owner_only(self, tmp_path):
        """Dead letters may hold order data: nobody else may read them."""
        letters = DeadLetters(tmp_path / "deep" / "state", Stats())
        assert "created" in letters.prepare()
        letters.record(b"x", "reason")
        assert stat.S_IMODE(os.stat(letters.state_dir).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(letters.path).st_mode) == 0o600
        assert letters.path.name == FILE_NAME

    def test_records_from_many_threads_stay_whole_lines(self, dead_letters):
        """The receiving thread and every worker append to the same file."""

        def write(thread: int) -> None:
            for n in range(100):
                dead_letters.record(f"{thread}-{n}".encode(), "reason", sink=f"s{thread}")

        threads = [threading.Thread(target=write, args=(t,)) for t in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        written = {base64.b64decode(r["raw"]).decode() for r in records(dead_letters.path)}
        assert written == {f"{t}-{n}" for t in range(4) for n in range(100)}

    def test_a_full_disk_is_counted_and_logged_never_raised(self, tmp_path):
        """ENOSPC (a real one: the file is /dev/full) must not stop the forwarder."""
        if not os.path.exists("/dev/full"):
            pytest.skip("this system has no /dev/full")
        stats = Stats()
        letters = DeadLetters(tmp_path / "state", stats)
        letters.prepare()
        letters.path.symlink_to("/dev/full")
        with capture_logs() as logs:
            letters.record(b"frame", "bad frame", event_id="ev-1")
            letters.record(b"frame", "bad frame", event_id="ev-2")
        assert stats.dead_letter_write_failures == 2
        [failed] = [line for line in logs if line["event"] == "dead_letter_write_failed"]
        assert "No space left on device" in failed["error"]
        assert failed["event_id"] == "ev-1"
        assert failed["log_level"] == "error"

    def test_a_flood_of_dead_letters_logs_one_warning_not_one_per_frame(self, dead_letters):
        """Each frame is in the file; the log gets a line per interval."""
        with capture_logs() as logs:
            for n in range(50):
                dead_letters.record(b"junk", "bad frame", event_id=f"ev-{n}")
        assert len(records(dead_letters.path)) == 50
        assert [line["event"] for line in logs] == ["frame_dead_lettered"]

    def test_a_state_directory_that_cannot_be_made_is_a_config_error(self, tmp_path):
        """The message names the setting, so the operator knows what to fix."""
        blocker = tmp_path / "file"
        blocker.write_text("")
        with pytest.raises(ConfigError) as caught:
            DeadLetters(blocker / "state", Stats()).prepare()
        assert caught.value.variable == "FORWARDER_STATE_DIR"
        assert str(blocker / "state") in str(caught.value)


class TestBounded:
    def test_a_frame_over_the_frame_limit_keeps_its_head_length_and_hash(self, tmp_path):
        """A frame larger than FORWARDER_MAX_FRAME_BYTES is summarised: its first 4 KiB, its
        length and its sha256, never its whole bytes."""
        letters = DeadLetters(tmp_path, Stats(), max_bytes=1 << 20, max_frame_bytes=64 << 10)
        frame = os.urandom(200 << 10)
        letters.record(frame, "too large for the sink", sink="kafka", event_id="ev-big")
        [record] = records(letters.path)
        assert (record["length"], record["truncated"]) == (len(frame), True)
        assert record["sha256"] == hashlib.sha256(frame).hexdigest()
        assert base64.b64decode(record["raw"]) == frame[:HEAD_BYTES]
        assert letters.path.stat().st_size < 8 << 10

    def test_no_record_is_ever_larger_than_the_cap(self, tmp_path):
        """A frame under the frame limit whose record would not fit the file's cap is
        summarised too, and reason and event id (they come from frames) are bounded."""
        cap = 64 << 10
        letters = DeadLetters(tmp_path, Stats(), max_bytes=cap, max_frame_bytes=1 << 20)
        letters.record(b"x" * (100 << 10), "r" * 50_000, event_id="e" * 50_000)
        [record] = records(letters.path)
        assert record["truncated"] is True
        assert len(record["reason"]) == 1000
        assert len(record["event_id"]) == 1000
        assert letters.path.stat().st_size < cap

    def test_rotation_counts_and_logs_the_records_it_drops(self, tmp_path):
        """The second rotation replaces the first generation: its records are counted in
        `dead_letters_discarded` and logged, never dropped silently."""
        stats = Stats()
        letters = DeadLetters(tmp_path, stats, max_bytes=64 << 10)
        with capture_logs() as logs:
            for n in range(400):
                letters.record(b"z" * 500, f"bad frame {n}")
        rotated = tmp_path / (FILE_NAME + ".1")
        kept = len(records(letters.path)) + len(records(rotated))
        assert stats.dead_letters_discarded == 400 - kept > 0
        discarded = [line for line in logs if line["event"] == "dead_letters_discarded"]
        assert sum(line["count"] for line in discarded) == stats.dead_letters_discarded
        assert {line["log_level"] for line in discarded} == {"warning"}
        assert stats.snapshot().dead_letters_discarded == stats.dead_letters_discarded


class TestRecord:
    def test_written_and_read_back_as_one_shape(self, tmp_path):
        """The line the forwarder appends is the Record the commands read."""
        letters = DeadLetters(tmp_path, Stats())
        letters.record(b"\x01\x02", "bad frame", sink="kafka", event_id="ev-1")
        record = Record.read(letters.path.read_text().splitlines()[0])
        assert record is not None
        assert (record.reason, record.sink, record.event_id, record.length) == (
            "bad frame",
            "kafka",
            "ev-1",
            2,
        )

    def test_a_line_of_an_older_forwarder_reads_with_defaults(self):
        """Records written before ids and hashes existed still read."""
        record = Record.read('{"time":"2026-01-29T10:30:45.123456Z","reason":"old","raw":"AQI="}')
        assert record == Record(time="2026-01-29T10:30:45.123456Z", reason="old", raw="AQI=")

    @pytest.mark.parametrize("line", ["", "not json", "[1, 2]", '{"length": "ten"}'])
    def test_a_line_that_is_not_a_record_reads_as_none(self, line):
        """The commands show such a line as unreadable instead of failing."""
        assert Record.read(line) is None
