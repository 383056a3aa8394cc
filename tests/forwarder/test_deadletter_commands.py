"""`dead-letters list|show|replay|purge` on real files, replaying into a real forwarder."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from emitter.contract import encode_envelope
from forwarder.deadletter import FILE_NAME, DeadLetters
from forwarder.stats import Stats
from tests.support.broker import consume
from tests.support.forwarder import GARBAGE, ForwarderProcess, envelope, forwarder_env, run_cli

REFUSED = encode_envelope(envelope(7, prefix="refused"))


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    return forwarder_env(tmp_path, ORDER_EVENT_MODE="KAFKA")


@pytest.fixture
def letters(env) -> DeadLetters:
    """A dead-letter file holding an undecodable frame, then an event a sink refused."""
    dead = DeadLetters(Path(env["FORWARDER_STATE_DIR"]), Stats())
    dead.prepare()
    dead.record(GARBAGE[0], "not msgpack")
    dead.record(REFUSED, "MessageSizeTooLargeError", sink="kafka", event_id="refused-000007")
    return dead


def lines(dead: DeadLetters) -> list[dict]:
    return [json.loads(line) for line in dead.path.read_text().splitlines()]


class TestReading:
    def test_list_numbers_each_record_with_its_sink_event_and_reason(self, env, letters):
        result = run_cli("dead-letters", "list", env=env)
        assert result.returncode == 0, result.stderr
        header, first, second = result.stdout.splitlines()
        assert header.split()[:5] == ["#", "time", "sink", "event", "id"]
        assert first.split()[0] == "1"
        assert first.endswith("not msgpack")
        assert second.split()[0] == "2"
        assert "kafka" in second
        assert "refused-000007" in second
        assert "order_event" in second

    def test_list_json_gives_every_field(self, env, letters):
        result = run_cli("dead-letters", "list", "--json", env=env)
        records = [json.loads(line) for line in result.stdout.splitlines()]
        assert [(r["number"], r["sink"], r["reason"]) for r in records] == [
            (1, None, "not msgpack"),
            (2, "kafka", "MessageSizeTooLargeError"),
        ]

    def test_show_decodes_the_event_or_shows_the_bytes(self, env, letters):
        shown = json.loads(run_cli("dead-letters", "show", "2", env=env).stdout)
        assert shown["envelope"]["id"] == "refused-000007"
        assert shown["envelope"]["data"]["orderid"] == "ORD7"
        garbage = json.loads(run_cli("dead-letters", "show", "1", env=env).stdout)
        assert garbage["decodes"].startswith("no: ")
        assert bytes.fromhex(garbage["raw_hex"].replace(" ", "")) == GARBAGE[0]
        missing = run_cli("dead-letters", "show", "3", env=env)
        assert missing.returncode == 1
        assert "there are 2" in missing.stderr

    def test_an_empty_state_directory_has_no_dead_letters(self, env):
        result = run_cli("dead-letters", "list", env=env)
        assert (result.returncode, result.stdout.strip()) == (0, "no dead letters")


class TestEscaping:
    def test_list_and_show_escape_what_came_from_the_frame(self, env):
        """Event id, event name, reason and payload come from frames: printed, their control
        characters are escapes, and `show` stays valid JSON."""
        hostile = "\x1b]0;owned\x07\x1b[2J\x9b31m\u202e"
        event = envelope(3, prefix=f"ev{hostile}")
        frame = encode_envelope(msgspec.structs.replace(event, event=f"order{hostile}"))
        dead = DeadLetters(Path(env["FORWARDER_STATE_DIR"]), Stats())
        dead.prepare()
        dead.record(frame, f"refused {hostile}", sink="kafka", event_id=event.id)
        outputs = [run_cli("dead-letters", "list", env=env).stdout]
        outputs.append(run_cli("dead-letters", "list", "--json", env=env).stdout)
        shown = run_cli("dead-letters", "show", "1", env=env).stdout
        for text in [*outputs, shown]:
            assert [c for c in text if c in "\x1b\x07\x9b\u202e"] == []
        assert "ev\\x1b]0;owned" in outputs[0]
        assert json.loads(shown)["envelope"]["event"] == f"order{hostile}"


class TestPurge:
    def test_purge_removes_only_the_chosen_records(self, env, letters):
        before = lines(letters)
        result = run_cli("dead-letters", "purge", "1", env=env)
        assert result.returncode == 0, result.stderr
        assert lines(letters) == before[1:]

    def test_purge_needs_numbers_or_all(self, env, letters):
        assert run_cli("dead-letters", "purge", env=env).returncode == 1
        assert run_cli("dead-letters", "purge", "--all", env=env).returncode == 0
        assert lines(letters) == []


class TestCap:
    def test_past_the_cap_the_file_rotates_once_and_both_are_listed(self, env, tmp_path):
        state = Path(env["FORWARDER_STATE_DIR"])
        dead = DeadLetters(state, Stats(), max_bytes=4096)
        dead.prepare()
        for n in range(60):
            dead.record(GARBAGE[0], f"garbage {n}")
        rotated = state / (FILE_NAME + ".1")
        assert rotated.exists()
        assert dead.path.stat().st_size <= 4096
        assert rotated.stat().st_size <= 4096
        kept = json.loads(
            run_cli("dead-letters", "list", "--json", env=env).stdout.splitlines()[-1]
        )
        assert kept["reason"] == "garbage 59"


@pytest.mark.integration
class TestReplay:
    def test_replay_sends_what_decodes_to_the_running_forwarder_and_keeps_the_rest(
        self, env, letters, kafka_bootstrap, forwarders
    ):
        topic = f"replay-{Path(env['HOME']).name}"
        env |= {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "KAFKA_ORDER_EVENTS_TOPIC": topic}
        process = ForwarderProcess(env)
        forwarders.append(process)
        process.start()
        result = run_cli("dead-letters", "replay", "--all", env=env)
        assert result.returncode == 1
        assert "1: kept, it still does not decode" in result.stdout
        assert "replayed 1 of 2 records" in result.stdout
        [record] = consume(kafka_bootstrap, topic, 1)
        assert json.loads(record.value)["event_id"] == "refused-000007"
        assert [line["reason"] for line in lines(letters)] == ["not msgpack"]

    def test_replay_refuses_when_no_forwarder_runs(self, env, letters):
        result = run_cli("dead-letters", "replay", "2", env=env)
        assert result.returncode == 1
        assert "the forwarder must be running to replay" in result.stderr
        assert len(lines(letters)) == 2
