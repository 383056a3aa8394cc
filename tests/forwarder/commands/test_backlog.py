"""`openalgo-forwarder backlog discard`: what a sink no longer configured held, dropped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from emitter.contract import encode_envelope
from forwarder.store import BUFFER_FILE, open_disk
from forwarder.store.inspect import describe
from harness.events import numbered
from harness.forwarder import ForwarderProcess, forwarder_env, run_cli
from harness.net import free_port


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    return forwarder_env(
        tmp_path, ORDER_EVENT_MODE="KAFKA", KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}"
    )


def hold(state: Path, sink: str, count: int) -> Path:
    """A buffer file holding `count` events for `sink`, as a forwarder in that mode left it."""
    state.mkdir(parents=True, exist_ok=True)
    store, _ = open_disk(state / BUFFER_FILE, [sink], max_bytes=1 << 20)
    envelopes = [numbered(n) for n in range(count)]
    store.put([encode_envelope(e) for e in envelopes], envelopes)
    store.close()
    return state / BUFFER_FILE


class TestDiscard:
    def test_drops_what_the_sink_held_and_counts_it_on_stdout_and_in_the_log(self, env):
        path = hold(Path(env["FORWARDER_STATE_DIR"]), "socketio", 20)
        result = run_cli("backlog", "discard", "socketio", env=env)
        assert result.returncode == 0, result.stderr
        assert result.stdout == f"discarded 20 events waiting for socketio in {path}\n"
        [line] = [json.loads(text) for text in result.stderr.splitlines()]
        assert (line["event"], line["sink"], line["discarded"]) == (
            "backlog_discarded",
            "socketio",
            20,
        )
        assert (
            describe(path, 1 << 20, ["kafka"]) == f"{path}: 0 events waiting, 0 of 1,048,576 bytes"
        )
        again = run_cli("backlog", "discard", "socketio", env=env)
        assert again.stdout == f"discarded 0 events waiting for socketio in {path}\n"

    @pytest.mark.integration
    def test_is_refused_while_a_forwarder_runs_on_the_directory(self, env, forwarders):
        """The running forwarder owns the buffer: the command exits 2 and names it."""
        hold(Path(env["FORWARDER_STATE_DIR"]), "socketio", 3)
        process = ForwarderProcess(env)
        forwarders.append(process)
        process.start()
        result = run_cli("backlog", "discard", "socketio", env=env)
        assert result.returncode == 2
        [line] = result.stderr.splitlines()
        assert f"pid {process.pid}" in line
