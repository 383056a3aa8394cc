"""One forwarder per state directory: a second one is turned away, naming who holds it."""

from __future__ import annotations

import os

import pytest

from emitter.config import ConfigError
from forwarder.state_lock import StateLock
from harness.forwarder import ForwarderProcess, forwarder_env, run_cli
from harness.net import free_port


class TestStateLock:
    def test_a_second_holder_is_refused_with_the_directory_and_the_pid(self, tmp_path):
        with StateLock(tmp_path), pytest.raises(ConfigError) as refused:
            StateLock(tmp_path).acquire()
        assert refused.value.variable == "FORWARDER_STATE_DIR"
        assert str(tmp_path) in str(refused.value)
        assert f"pid {os.getpid()}" in str(refused.value)

    def test_released_it_can_be_taken_again(self, tmp_path):
        first = StateLock(tmp_path)
        first.acquire()
        first.release()
        with StateLock(tmp_path):
            pass


@pytest.mark.integration
def test_a_second_forwarder_on_the_same_state_directory_exits_2_naming_the_first(
    tmp_path, forwarders
):
    """Two forwarders on one buffer would both deliver it: the second stops before starting."""
    env = forwarder_env(
        tmp_path, ORDER_EVENT_MODE="KAFKA", KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}"
    )
    first = ForwarderProcess(env)
    forwarders.append(first)
    first.start()
    second = env | {"FORWARDER_ENDPOINT": f"ipc://{tmp_path}/other/events.sock"}
    result = run_cli("run", env=second, timeout=30)
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert env["FORWARDER_STATE_DIR"] in line
    assert f"pid {first.pid}" in line
