"""`dead-letters list|show|replay|purge` on real files, replaying into a real forwarder."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import msgspec
import pytest

from emitter.contract import encode_envelope
from forwarder.cli import main
from forwarder.commands.dead_letters import read
from forwarder.deadletter import FILE_NAME, DeadLetters
from forwarder.stats import Stats
from harness.broker import consume
from harness.events import numbered
from harness.forwarder import ForwarderProcess, forwarder_env, run_cli
from tests.support.frames import GARBAGE

REFUSED = encode_envelope(numbered(7, prefix="refused"))


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


def ids(env) -> list[str]:
    return [
        r["id"]
        for r in map(
            json.loads, run_cli("dead-letters", "list", "--json", env=env).stdout.splitlines()
        )
    ]


class TestReading:
    def test_list_names_each_record_by_id_with_its_sink_event_and_reason(self, env, letters):
        result = run_cli("dead-letters", "list", env=env)
        assert result.returncode == 0, result.stderr
        header, first, second = result.stdout.splitlines()
        assert header.split()[:5] == ["id", "time", "sink", "event", "id"]
        first_id, second_id = [line["id"] for line in lines(letters)]
        assert first.split()[0] == first_id
        assert first.endswith("not msgpack")
        assert second.split()[0] == second_id
        assert "kafka" in second
        assert "refused-000007" in second
        assert "order_event" in second

    def test_list_json_gives_every_field(self, env, letters):
        result = run_cli("dead-letters", "list", "--json", env=env)
        records = [json.loads(line) for line in result.stdout.splitlines()]
        assert [(r["id"], r["sink"], r["reason"]) for r in records] == [
            (line["id"], line["sink"], line["reason"]) for line in lines(letters)
        ]

    def test_show_decodes_the_event_or_shows_the_bytes(self, env, letters):
        garbage_id, refused_id = ids(env)
        shown = json.loads(run_cli("dead-letters", "show", refused_id, env=env).stdout)
        assert shown["envelope"]["id"] == "refused-000007"
        assert shown["envelope"]["data"]["orderid"] == "ORD7"
        garbage = json.loads(run_cli("dead-letters", "show", garbage_id[:6], env=env).stdout)
        assert garbage["decodes"].startswith("no: ")
        assert bytes.fromhex(garbage["raw_hex"].replace(" ", "")) == GARBAGE[0]
        missing = run_cli("dead-letters", "show", "ffffffff", env=env)
        assert missing.returncode == 1
        assert "no dead letter 'ffffffff'" in missing.stderr

    def test_a_line_without_an_id_is_named_by_its_hash(self, env, letters):
        """Files written before records had ids still work: the line's hash names it."""
        old = '{"time":"2026-01-01T00:00:00Z","reason":"old","sink":null,"raw":""}'
        with letters.path.open("a") as out:
            out.write(old + "\n")
        [*_, last] = ids(env)
        assert last == hashlib.sha256(old.encode()).hexdigest()[:16]
        assert run_cli("dead-letters", "purge", last, env=env).returncode == 0
        assert old not in letters.path.read_text()

    def test_an_empty_state_directory_has_no_dead_letters(self, env):
        Path(env["FORWARDER_STATE_DIR"]).mkdir(parents=True)
        result = run_cli("dead-letters", "list", env=env)
        assert (result.returncode, result.stdout.strip()) == (0, "no dead letters")

    def test_a_state_directory_that_is_not_there_is_an_error_not_an_empty_list(self, env):
        """Pointed at the wrong place (the service's settings not given), `list` must not
        answer "no dead letters"."""
        result = run_cli("dead-letters", "list", env=env)
        assert result.returncode == 1
        assert result.stdout == ""
        [line] = result.stderr.splitlines()
        assert "no state directory" in line
        assert "--service" in line


class TestEscaping:
    def test_list_and_show_escape_what_came_from_the_frame(self, env):
        """Event id, event name, reason and payload come from frames: printed, their control
        characters are escapes, and `show` stays valid JSON."""
        hostile = "\x1b]0;owned\x07\x1b[2J\x9b31m\u202e"
        event = numbered(3, prefix=f"ev{hostile}")
        frame = encode_envelope(msgspec.structs.replace(event, event=f"order{hostile}"))
        dead = DeadLetters(Path(env["FORWARDER_STATE_DIR"]), Stats())
        dead.prepare()
        dead.record(frame, f"refused {hostile}", sink="kafka", event_id=event.id)
        outputs = [run_cli("dead-letters", "list", env=env).stdout]
        outputs.append(run_cli("dead-letters", "list", "--json", env=env).stdout)
        shown = run_cli("dead-letters", "show", ids(env)[0], env=env).stdout
        for text in [*outputs, shown]:
            assert [c for c in text if c in "\x1b\x07\x9b\u202e"] == []
        assert "ev\\x1b]0;owned" in outputs[0]
        assert json.loads(shown)["envelope"]["event"] == f"order{hostile}"


class TestPurge:
    def test_purge_removes_only_the_chosen_records(self, env, letters):
        before = lines(letters)
        result = run_cli("dead-letters", "purge", before[0]["id"], env=env)
        assert result.returncode == 0, result.stderr
        assert lines(letters) == before[1:]

    def test_purge_needs_ids_or_all(self, env, letters):
        assert run_cli("dead-letters", "purge", env=env).returncode == 1
        assert run_cli("dead-letters", "purge", "--all", env=env).returncode == 0
        assert lines(letters) == []

    def test_a_record_is_found_wherever_rotation_moved_it(self, tmp_path):
        """Positions change when the file rotates between `list` and `purge`: the id still
        names the same record, in .1 or in the current file, and nothing else is removed."""
        state = tmp_path / "state"
        dead = DeadLetters(state, Stats(), max_bytes=64 << 10)
        dead.prepare()
        dead.record(GARBAGE[0], "the one to purge")
        chosen = read(dead.path)[0]
        for n in range(100):
            dead.record(b"z" * 500, f"later {n}")
        assert (state / (FILE_NAME + ".1")).exists()
        assert chosen.id in {letter.id for letter in read(dead.path)}
        before = [letter.id for letter in read(dead.path)]
        env = forwarder_env(tmp_path, ORDER_EVENT_MODE="KAFKA")
        assert run_cli("dead-letters", "purge", chosen.id, env=env).returncode == 0
        assert [letter.id for letter in read(dead.path)] == [i for i in before if i != chosen.id]


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="changing owners needs root")


@pytest.fixture
def owned_by_nobody(shared_tmp) -> tuple[dict[str, str], DeadLetters]:
    """A state directory and dead-letter file owned by nobody, as the forwarder's user owns
    them under systemd, in a directory other users can reach."""
    env = forwarder_env(shared_tmp, ORDER_EVENT_MODE="KAFKA")
    state = Path(env["FORWARDER_STATE_DIR"])
    dead = DeadLetters(state, Stats())
    dead.prepare()
    dead.record(GARBAGE[0], "not msgpack")
    dead.record(REFUSED, "MessageSizeTooLargeError", sink="kafka", event_id="refused-000007")
    for path in (state, dead.path, state / (FILE_NAME + ".lock")):
        os.chown(path, 65534, 65534)
    dead.path.chmod(0o640)
    return env, dead


@needs_root
class TestOwnership:
    def test_root_keeps_the_files_owner_and_the_forwarder_can_still_write(self, owned_by_nobody):
        """`purge` run as root left dead-letters.jsonl root:0600 and later dead letters were
        lost: now the rewritten file, and a lock file root creates, keep the forwarder's owner,
        and the forwarder's user (nobody here) appends afterwards."""
        env, letters = owned_by_nobody
        state = letters.state_dir
        (state / "dead-letters.jsonl.lock").unlink()
        first = lines(letters)[0]["id"]
        assert run_cli("dead-letters", "purge", first, env=env).returncode == 0
        for path in (letters.path, state / "dead-letters.jsonl.lock"):
            assert (path.stat().st_uid, path.stat().st_gid) == (65534, 65534)
        assert stat.S_IMODE(letters.path.stat().st_mode) == 0o640
        assert as_user(65534, {}, lambda: DeadLetters(state, Stats()).record(b"x", "later")) == 0
        assert lines(letters)[-1]["reason"] == "later"

    def test_another_user_is_refused_with_one_line(self, owned_by_nobody, capfd):
        """Neither root nor the owner: the command says whose file it is and changes nothing."""
        env, letters = owned_by_nobody
        letters.path.chmod(0o644)
        letters.state_dir.chmod(0o755)
        os.chown(letters.path, 0, 0)
        before = letters.path.read_bytes()
        assert as_user(65534, env, lambda: main(["dead-letters", "purge", "--all"])) == 1
        assert letters.path.read_bytes() == before
        [line] = capfd.readouterr().err.splitlines()
        assert "belongs to uid 0: run this as that user" in line


def as_user(uid: int, env: dict[str, str], action) -> int:
    """Run `action` in a child process with that uid and environment; its return value (or 70
    on an error)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child ends with os._exit
        code = 70
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            os.environ.update(env)
            result = action()
            code = result if isinstance(result, int) else 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


class TestCap:
    def test_past_the_cap_the_file_rotates_once_and_both_are_listed(self, env, tmp_path):
        state = Path(env["FORWARDER_STATE_DIR"])
        dead = DeadLetters(state, Stats(), max_bytes=8192)
        dead.prepare()
        for n in range(60):
            dead.record(GARBAGE[0], f"garbage {n}")
        rotated = state / (FILE_NAME + ".1")
        assert rotated.exists()
        assert dead.path.stat().st_size <= 8192
        assert rotated.stat().st_size <= 8192
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
        garbage_id = lines(letters)[0]["id"]
        result = run_cli("dead-letters", "replay", "--all", env=env)
        assert result.returncode == 1
        assert f"{garbage_id}: kept, it still does not decode" in result.stdout
        assert "replayed 1 of 2 records" in result.stdout
        [record] = consume(kafka_bootstrap, topic, 1)
        assert json.loads(record.value)["event_id"] == "refused-000007"
        assert [line["reason"] for line in lines(letters)] == ["not msgpack"]

    def test_replay_refuses_when_no_forwarder_runs(self, env, letters):
        result = run_cli("dead-letters", "replay", lines(letters)[1]["id"], env=env)
        assert result.returncode == 1
        assert "the forwarder must be running to replay" in result.stderr
        assert len(lines(letters)) == 2
