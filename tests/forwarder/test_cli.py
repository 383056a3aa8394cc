"""The command line as an operator meets it: exit statuses, one-line errors, the check report."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from emitter.contract import encode_envelope
from emitter.settings import EmitterSettings
from forwarder.settings import Settings
from forwarder.store import open_disk
from harness.events import numbered
from harness.forwarder import ForwarderProcess, forwarder_env, run_cli
from harness.net import free_port
from harness.processes import ROOT
from tests.support import systemd

pytestmark = pytest.mark.integration  # every test here starts the forwarder as a subprocess

SECRET = "relay-secret-abcdef-0123456789"
SASL_PASSWORD = "sasl-password-9876543210"


@pytest.fixture
def env(tmp_path):
    return forwarder_env(tmp_path, ORDER_EVENT_MODE="KAFKA")


def assert_one_config_error(result, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("openalgo-forwarder: ")
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in line


class TestConfigErrors:
    @pytest.mark.parametrize("command", ["run", "check"])
    @pytest.mark.parametrize(
        ("variable", "value"),
        [
            ("ORDER_EVENT_MODE", "REDIS"),
            ("FORWARDER_BATCH_MAX", "abc"),
            ("KAFKA_PRODUCER_COMPRESSION", "brotli"),
            ("FORWARDER_ENDPOINT", "tcp://192.0.2.1:5556"),
        ],
    )
    def test_a_bad_value_exits_2_with_one_line_naming_it(self, env, command, variable, value):
        """No traceback: one line with the variable, the value and what would be accepted."""
        result = run_cli(command, env=env | {variable: value})
        assert_one_config_error(result, variable, repr(value), "expected")

    @pytest.mark.parametrize("after_the_command", [False, True])
    def test_a_bad_value_from_the_env_file_is_reported_the_same_way(
        self, env, tmp_path, after_the_command
    ):
        """The env file is read like the environment, so its mistakes are named too; the option
        may come before or after the command."""
        env_file = tmp_path / "forwarder.env"
        env_file.write_text("# settings\nFORWARDER_BATCH_MAX=0\n")
        option = ["--env-file", str(env_file)]
        args = ["check", *option] if after_the_command else [*option, "check"]
        result = run_cli(*args, env=env)
        assert_one_config_error(result, "FORWARDER_BATCH_MAX='0'", "positive integer")

    def test_the_environment_wins_over_the_env_file(self, env, tmp_path):
        """The file fills in what the environment lacks; it never overrides it."""
        env_file = tmp_path / "forwarder.env"
        env_file.write_text("FORWARDER_BATCH_MAX=0\n")
        result = run_cli("--env-file", str(env_file), "run", env=env | {"FORWARDER_BATCH_MAX": "x"})
        assert_one_config_error(result, "FORWARDER_BATCH_MAX='x'")

    def test_a_missing_env_file_exits_2(self, env, tmp_path):
        """A mistyped path must not silently run on defaults."""
        result = run_cli("--env-file", str(tmp_path / "nope.env"), "run", env=env)
        assert_one_config_error(result, "--env-file", "nope.env", "readable file")

    def test_an_unknown_socket_group_stops_run(self, env):
        """Checked before anything binds, with the same one-line message."""
        result = run_cli("run", env=env | {"FORWARDER_SOCKET_GROUP": "no-such-group-xyz"})
        assert_one_config_error(result, "FORWARDER_SOCKET_GROUP", "no-such-group-xyz")

    def test_an_endpoint_directory_others_can_write_stops_run(self, env, tmp_path):
        """Found only when binding, yet reported like any other bad setting."""
        shared = tmp_path / "shared"
        shared.mkdir()
        shared.chmod(0o1777)
        endpoint = f"ipc://{shared}/events.sock"
        result = run_cli("run", env=env | {"FORWARDER_ENDPOINT": endpoint})
        assert_one_config_error(result, "FORWARDER_ENDPOINT", endpoint, "others cannot write")
        assert not (shared / "events.sock").exists()

    def test_a_short_relay_secret_is_not_printed(self, env):
        """Even a wrong secret stays out of the message."""
        result = run_cli(
            "run", env=env | {"ORDER_EVENT_MODE": "SOCKETIO", "SOCKETIO_RELAY_SECRET": "tooshort"}
        )
        assert_one_config_error(result, "SOCKETIO_RELAY_SECRET", "16 characters")
        assert "tooshort" not in result.stderr


class TestEnvFile:
    def test_the_shipped_sample_passes_the_configuration_check_as_it_stands(self, tmp_path):
        """`cp .sample.env forwarder.env && check --env-file forwarder.env`: no setting is
        refused; what is left is the relay secret nobody can ship, reported on its sink line."""
        env_file = tmp_path / "forwarder.env"
        env_file.write_bytes((ROOT / ".sample.env").read_bytes())
        runtime = Path(tempfile.mkdtemp(prefix="fwd-", dir="/tmp"))  # a socket path is short
        clean = {
            "PATH": forwarder_env(tmp_path)["PATH"],
            "HOME": str(tmp_path),
            "XDG_RUNTIME_DIR": str(runtime),
        }
        try:
            result = run_cli("check", "--env-file", str(env_file), env=clean)
        finally:
            shutil.rmtree(runtime)
        assert result.returncode == 1, result.stdout + result.stderr
        assert "is not valid" not in result.stderr
        lines = result.stdout.splitlines()
        assert lines[0].startswith("ok     configuration: modes SOCKETIO")
        assert not [line for line in lines if line.startswith("warn")]
        [failed] = [line for line in lines if line.startswith("FAILED")]
        assert failed.startswith("FAILED sink socketio: SOCKETIO_RELAY_SECRET is not set")

    def test_a_value_means_what_systemd_makes_of_it_and_check_warns(self, env, tmp_path):
        """An inline `# comment` is part of the value for EnvironmentFile=, so for --env-file
        too; `check` names the line where a dotenv reader would have expected otherwise."""
        env_file = tmp_path / "forwarder.env"
        env_file.write_text("# settings\nKAFKA_ORDER_EVENTS_TOPIC=orders # the topic\n")
        assert systemd.environment_file(env_file) == {
            "KAFKA_ORDER_EVENTS_TOPIC": "orders # the topic"
        }
        result = run_cli(
            "check",
            "--env-file",
            str(env_file),
            env=env
            | {
                "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
                "KAFKA_PRODUCER_REQUEST_TIMEOUT_MS": "1000",
            },
        )
        assert " topic orders # the topic " in result.stdout
        [warning] = [line for line in result.stdout.splitlines() if line.startswith("warn")]
        assert warning == (
            f"warn   {env_file} line 2: KAFKA_ORDER_EVENTS_TOPIC: systemd keeps '#' and what "
            "follows it as part of the value (it is no comment there)"
        )

    def test_a_file_systemd_would_refuse_exits_2(self, env, tmp_path):
        """Invalid UTF-8 stops systemd from starting the unit: the command says so at once."""
        env_file = tmp_path / "forwarder.env"
        env_file.write_bytes(b"KAFKA_CLIENT_ID=caf\xe9\n")
        result = run_cli("run", "--env-file", str(env_file), env=env)
        assert_one_config_error(result, "--env-file", "line 1: invalid UTF-8")


class TestStartupErrors:
    """What the daemon cannot take at start is one line and exit status 2, like a bad setting."""

    def test_a_metrics_port_in_use(self, env):
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            address = f"127.0.0.1:{taken.getsockname()[1]}"
            result = run_cli("run", env=env | {"FORWARDER_METRICS_ADDR": address})
        assert_one_config_error(result, f"cannot serve metrics on {address}", "already in use")
        assert not Path(env["FORWARDER_ENDPOINT"].removeprefix("ipc://")).exists()

    def test_a_control_socket_another_process_answers_on(self, env):
        run_dir = Path(env["FORWARDER_ENDPOINT"].removeprefix("ipc://")).parent
        run_dir.mkdir(mode=0o700, parents=True)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as other:
            other.bind(str(run_dir / "control.sock"))
            other.listen()
            result = run_cli("run", env=env)
        assert_one_config_error(result, "another forwarder already answers on", "control.sock")
        assert not (run_dir / "events.sock").exists()

    @pytest.mark.parametrize("variable", ["FORWARDER_STATE_DIR", "FORWARDER_ENDPOINT"])
    def test_a_directory_that_cannot_be_made(self, env, tmp_path, variable):
        """A path under a regular file cannot be created, whoever runs the forwarder."""
        blocker = tmp_path / "a-file"
        blocker.write_text("")
        value = str(blocker / "dir")
        if variable == "FORWARDER_ENDPOINT":
            value = f"ipc://{blocker}/dir/events.sock"
        result = run_cli("run", env=env | {variable: value})
        assert_one_config_error(result, str(blocker / "dir"))


class TestUsage:
    def test_help_says_the_environment_wins_over_the_env_file(self, env):
        """The precedence rule is documented where people look for it."""
        result = run_cli("--help", env=env)
        assert result.returncode == 0
        assert "--env-file" in result.stdout
        assert "environment wins" in " ".join(result.stdout.split())

    def test_a_command_is_required(self, env):
        """Without run or check there is nothing to do: usage and status 2."""
        result = run_cli(env=env)
        assert result.returncode == 2
        assert "usage:" in result.stderr


class TestCheck:
    def test_a_reachable_broker_passes_every_check(self, env, kafka_bootstrap):
        """Status 0 and an ok line for the configuration, endpoint, state directory and sink."""
        result = run_cli(
            "check",
            env=env | {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap},
        )
        assert result.returncode == 0, result.stdout + result.stderr
        lines = result.stdout.splitlines()
        assert [line.split(":")[0].split(None, 1) for line in lines] == [
            ["ok", "configuration"],
            ["ok", "emitter"],
            ["ok", "endpoint"],
            ["ok", "state directory"],
            ["ok", "buffer"],
            ["ok", "sink kafka"],
        ]
        assert "frames up to 327,680 bytes" in lines[0]
        assert "buffer.sqlite (created at start), up to 268,435,456 bytes" in lines[4]
        assert kafka_bootstrap in lines[5]

    def test_check_reports_what_the_buffer_holds_and_a_damaged_one(self, env, tmp_path):
        """Read-only: what waits is counted, a damaged file named without touching it."""
        state = Path(env["FORWARDER_STATE_DIR"])
        state.mkdir(parents=True)
        stored, _ = open_disk(state / "buffer.sqlite", ["kafka"], max_bytes=1 << 20)
        envelopes = [numbered(n) for n in range(3)]
        frames = [encode_envelope(e) for e in envelopes]
        stored.put(frames, envelopes)
        stored.close()
        [line] = [
            line for line in run_cli("check", env=env).stdout.splitlines() if " buffer:" in line
        ]
        assert line.startswith("ok")
        size = sum(map(len, frames))
        assert f"3 events waiting (kafka 3), {size:,} of 268,435,456 bytes" in line
        (state / "buffer.sqlite").write_bytes(b"not a database at all" * 100)
        result = run_cli("check", env=env)
        [line] = [line for line in result.stdout.splitlines() if " buffer:" in line]
        assert line.startswith("FAILED")
        assert "will be set aside at start" in line
        assert result.returncode == 1
        assert (state / "buffer.sqlite").read_bytes().startswith(b"not a database")

    def test_the_apps_emitter_settings_in_the_same_file_are_checked_too(self, env):
        """EMITTER_* lines are described, and a bad one stops the check like any other."""
        limits = {"EMITTER_SNDHWM": "50", "EMITTER_MAX_EVENT_BYTES": "65536"}
        [line] = [
            line
            for line in run_cli("check", env=env | limits).stdout.splitlines()
            if " emitter:" in line
        ]
        assert line == (
            "ok     emitter: holds up to 50 events (+50 in ZeroMQ) or 64 MiB; refuses events "
            "over 64 KiB; exit waits up to 500 ms"
        )
        result = run_cli("check", env=env | {"EMITTER_QUEUE_MAX_BYTES": "100000"})
        assert_one_config_error(
            result, "EMITTER_QUEUE_MAX_BYTES='100000'", "8 x EMITTER_MAX_EVENT_BYTES"
        )

    def test_an_emitter_event_limit_above_the_frame_limit_fails_the_check(self, env):
        """Events between the two limits would be queued by the app and refused: status 1."""
        limits = {"EMITTER_MAX_EVENT_BYTES": "524288", "FORWARDER_MAX_FRAME_BYTES": "327680"}
        result = run_cli("check", env=env | limits)
        assert result.returncode == 1, result.stdout + result.stderr
        [line] = [line for line in result.stdout.splitlines() if "frame limits" in line]
        assert line.startswith("FAILED frame limits: EMITTER_MAX_EVENT_BYTES (524,288)")

    def test_the_default_frame_limit_takes_the_largest_event_the_app_accepts(self):
        """The defaults agree: a frame of EMITTER_MAX_EVENT_BYTES is never refused."""
        assert EmitterSettings().max_event_bytes < Settings().max_frame_bytes

    def test_an_unreachable_broker_fails_the_check_with_the_reason(self, env):
        """Status 1 and a FAILED line for the sink; the other checks still report."""
        result = run_cli(
            "check",
            env=env
            | {
                "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
                "KAFKA_PRODUCER_REQUEST_TIMEOUT_MS": "2000",
            },
        )
        assert result.returncode == 1, result.stdout + result.stderr
        lines = result.stdout.splitlines()
        assert lines[0].startswith("ok     configuration: ")
        assert lines[-1].startswith("FAILED sink kafka: ")
        assert len(lines[-1]) > len("FAILED sink kafka: ")

    def test_secrets_are_shown_only_as_set(self, env):
        """The report says whether each secret is configured, never what it is."""
        result = run_cli(
            "check",
            env=env
            | {
                "ORDER_EVENT_MODE": "SOCKETIO,KAFKA",
                "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
                "KAFKA_PRODUCER_REQUEST_TIMEOUT_MS": "2000",
                "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                "KAFKA_SASL_USERNAME": "trader",
                "KAFKA_SASL_PASSWORD": SASL_PASSWORD,
                "SOCKETIO_RELAY_SECRET": SECRET,
                "SOCKETIO_URL": f"http://127.0.0.1:{free_port()}",
                "SOCKETIO_ACK_TIMEOUT_S": "2",
            },
        )
        assert result.returncode == 1
        assert "user trader password set" in result.stdout
        assert "relay secret set" in result.stdout
        for secret in (SECRET, SASL_PASSWORD):
            assert secret not in result.stdout + result.stderr
        assert "FAILED sink kafka: " in result.stdout
        assert "FAILED sink socketio: " in result.stdout


class TestRun:
    @pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
    def test_a_stop_signal_ends_run_with_status_0(self, env, forwarders, signum):
        """systemd's SIGTERM and a terminal's Ctrl-C both stop it cleanly."""
        env |= {"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"}
        process = ForwarderProcess(env)
        forwarders.append(process)
        started = process.start().logs("forwarder_started")[0]
        assert started["pid"] == process.pid
        assert started["modes"] == ["KAFKA"]
        assert started["endpoint"] == env["FORWARDER_ENDPOINT"]
        process.send_signal(signum)
        assert process.wait(30) == 0
        stopped = process.wait_for_log("forwarder_stopped")
        assert stopped["waiting"] == {"kafka": 0}


class TestBuildSinks:
    @pytest.mark.parametrize(
        ("mode", "names", "imports_socketio"),
        [("KAFKA", ["kafka"], False), ("SOCKETIO,KAFKA", ["kafka", "socketio"], True)],
    )
    def test_only_the_configured_sinks_are_built_and_imported(
        self, env, mode, names, imports_socketio
    ):
        """A Kafka-only install need not have the Socket.IO client: it is never imported."""
        script = (
            "import json, sys, forwarder.cli\n"
            "from forwarder.settings import Settings\n"
            "from forwarder.sinks import build_sinks\n"
            "sinks = build_sinks(Settings.from_env())\n"
            "print(json.dumps([[sink.name for sink in sinks], 'socketio' in sys.modules]))\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", script],
            env=env | {"ORDER_EVENT_MODE": mode, "SOCKETIO_RELAY_SECRET": SECRET},
            capture_output=True,
            text=True,
            check=True,
        )
        assert json.loads(result.stdout) == [names, imports_socketio]
