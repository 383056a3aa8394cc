"""The systemd units are valid, hardened, agree with the code they start, and every documented
command finds the daemon they start."""

from __future__ import annotations

import grp
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from emitter.contract import encode_envelope
from forwarder.deadletter import DeadLetters
from forwarder.service_paths import ServicePaths
from forwarder.settings import Settings
from forwarder.stats import Stats
from harness.broker import consume, unique_topic
from harness.events import numbered, push_frames
from harness.forwarder import run_cli
from tests.support.frames import GARBAGE
from tests.support.systemd import EmulatedService, Unit

ROOT = Path(__file__).resolve().parent.parent
SINGLE = ROOT / "systemd" / "openalgo-forwarder.service"
TEMPLATE = ROOT / "systemd" / "openalgo-forwarder@.service"
UNITS = [Unit(SINGLE), Unit(TEMPLATE, "openalgo1")]
MAX_EXPOSURE = 1.5
STAND_IN = "/usr/bin/true"
"""An executable present on every systemd machine, for verifying before the package is installed."""


def unit_id(unit: Unit) -> str:
    return unit.path.name if unit.instance is None else f"{unit.path.stem}{unit.instance}"


def systemd_analyze(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.fail("systemd-analyze is not installed: make systemd-deps")
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=60, check=False)


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(s|min)?", value)
    assert match, f"unexpected time span {value!r}"
    return int(match.group(1)) * (60 if match.group(2) == "min" else 1)


def instance_file(unit: Unit, directory: Path) -> Path:
    """The file systemd-analyze reads: a template is checked through one of its instances."""
    name = unit.path.name if unit.instance is None else f"{unit.path.stem}{unit.instance}.service"
    copy = directory / name
    copy.write_text(unit.path.read_text())
    return copy


@pytest.mark.parametrize("unit", UNITS, ids=unit_id)
class TestSystemdAnalyze:
    def test_verify(self, unit, tmp_path):
        """`systemd-analyze verify` accepts the unit; only a missing binary may be complained of,
        and then a copy whose ExecStart names an existing one must pass cleanly."""
        binary = unit.one("ExecStart").split()[0]
        checked = instance_file(unit, tmp_path)
        result = systemd_analyze("verify", str(checked))
        if Path(binary).is_file():
            assert (result.returncode, result.stdout + result.stderr) == (0, "")
            return
        assert result.returncode != 0
        [complaint] = result.stderr.strip().splitlines()
        assert f"Command {binary} is not executable" in complaint
        checked.write_text(
            checked.read_text().replace(f"ExecStart={binary}", f"ExecStart={STAND_IN}")
        )
        assert checked.read_text().count(STAND_IN) == 1
        result = systemd_analyze("verify", str(checked))
        assert (result.returncode, result.stdout + result.stderr) == (0, "")

    def test_exposure(self, unit, tmp_path):
        """`systemd-analyze security --offline=true` rates the unit at most 1.5."""
        result = systemd_analyze("security", "--offline=true", str(instance_file(unit, tmp_path)))
        assert result.returncode == 0, result.stderr
        match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
        assert match, result.stdout
        assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout


@pytest.mark.parametrize("unit", UNITS, ids=unit_id)
class TestUnitMatchesTheCode:
    def test_exec_start_runs_the_entry_point(self, unit):
        """ExecStart calls the console script pyproject.toml installs, with `run`."""
        scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
        binary, *args = unit.one("ExecStart").split()
        assert Path(binary).name in scripts
        assert args == ["run"]

    def test_stop_timeout_covers_the_drain(self, unit):
        """systemd waits longer than the forwarder's own shutdown drain before killing it."""
        assert seconds(unit.one("TimeoutStopSec")) > Settings().shutdown_timeout_s

    def test_a_configuration_error_is_not_restarted(self, unit):
        """Exit status 2 needs the operator: restarting it every 2 s would only fill the log."""
        assert unit.one("Restart") == "on-failure"
        assert unit.one("RestartPreventExitStatus") == "2"

    def test_notify_with_watchdog(self, unit):
        """The forwarder reports readiness and liveness, and only its main process may."""
        service = unit.directives("Service")
        assert service["Type"] == ["notify"]
        assert service["NotifyAccess"] == ["main"]
        assert seconds(unit.one("WatchdogSec")) > 0

    def test_the_commands_find_the_units_files(self, unit):
        """--service and --instance NAME give a command the env file and directories this unit
        gives the daemon: its EnvironmentFile=, RuntimeDirectory= and StateDirectory=."""
        paths = ServicePaths.of(unit.instance)
        assert unit.directives("Service")["EnvironmentFile"] == [str(paths.env_file)]
        assert Path("/run") / unit.one("RuntimeDirectory") == paths.runtime_directory
        assert Path("/var/lib") / unit.one("StateDirectory") == paths.state_directory
        assert paths.unit == (unit.path.name.replace("@", f"@{unit.instance}"))

    def test_the_daemon_puts_its_socket_and_state_in_the_units_directories(self, unit):
        """With the env file's FORWARDER_ENDPOINT and FORWARDER_STATE_DIR empty, as .sample.env
        has them, the socket lands in RuntimeDirectory= and the state in StateDirectory=."""
        settings = Settings.from_env(
            {"FORWARDER_ENDPOINT": "", "FORWARDER_STATE_DIR": ""}
            | ServicePaths.of(unit.instance).environment()
        )
        assert settings.endpoint == f"ipc:///run/{unit.one('RuntimeDirectory')}/events.sock"
        assert settings.state_dir == Path("/var/lib") / unit.one("StateDirectory")

    def test_no_environment_line_an_env_file_could_silently_override(self, unit):
        """EnvironmentFile= wins over Environment=: the unit sets no setting the file could
        replace, not even with an empty `NAME=` line."""
        assert "Environment" not in unit.directives("Service")

    def test_can_reach_remote_brokers(self, unit):
        """Hardening leaves IPv4 and IPv6 open and blocks no address, so any Kafka is reachable."""
        service = unit.directives("Service")
        families = " ".join(service["RestrictAddressFamilies"]).split()
        assert {"AF_INET", "AF_INET6", "AF_UNIX"} <= set(families)
        assert "PrivateNetwork" not in service
        assert "IPAddressDeny" not in service


def test_the_template_is_the_single_unit_with_per_instance_names():
    """The two units cannot drift apart: the template differs only in what names the instance."""
    single = Unit(SINGLE).directives("Service")
    template = Unit(TEMPLATE, "X").directives("Service")
    per_instance = {"EnvironmentFile", "RuntimeDirectory", "StateDirectory", "SyslogIdentifier"}
    assert {k: v for k, v in single.items() if k not in per_instance} == {
        k: v for k, v in template.items() if k not in per_instance
    }
    for key in per_instance:
        named = [
            value.replace("openalgo-forwarder", "openalgo-forwarder-X").replace(
                "forwarder.env", "forwarder-X.env"
            )
            for value in single[key]
        ]
        assert template[key] == named


def install_env_file(service: EmulatedService, **values: str) -> None:
    """.sample.env copied as the install steps copy it, with the lines an operator edits."""
    service.env_file.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for line in (ROOT / ".sample.env").read_text().splitlines():
        name = line.partition("=")[0]
        lines.append(f"{name}={values.pop(name)}" if name in values else line)
    assert not values, f"not in .sample.env: {values}"
    service.env_file.write_text("\n".join(lines) + "\n")
    service.env_file.chmod(0o600)


def passed_through() -> dict[str, str]:
    """What the service manager's own environment gives a service: a PATH, a locale."""
    return {name: os.environ[name] for name in ("PATH", "LANG") if name in os.environ}


@pytest.mark.integration
class TestEveryDocumentedCommandUnderTheUnit:
    @pytest.mark.parametrize("unit", UNITS, ids=unit_id)
    def test_each_command_finds_the_daemon(self, unit, shared_tmp, kafka_bootstrap):
        """The daemon started as the unit starts it (its env file a copy of .sample.env with
        only the sink filled in), then each command the README documents, with --service or
        --instance: check, stats, dead-letters list/show/replay/purge and logs all reach it."""
        group = grp.getgrnam("nogroup").gr_gid if os.geteuid() == 0 else None
        service = EmulatedService(unit, shared_tmp, group=group)
        topic = unique_topic("unit")
        install_env_file(
            service,
            ORDER_EVENT_MODE="KAFKA",
            KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
            KAFKA_ORDER_EVENTS_TOPIC=topic,
            LOG_FORMAT="json",
        )
        where = ["--root", str(shared_tmp)]
        where += ["--service"] if unit.instance is None else ["--instance", unit.instance]
        cli_env = passed_through() | {"HOME": str(shared_tmp / "root")}

        def command(*args: str) -> subprocess.CompletedProcess[str]:
            return run_cli(*where, *args, env=cli_env)

        try:
            process = service.start(passed_through())
            socket_path = service.runtime_directory / "events.sock"
            assert process.logs("forwarder_started")[0]["endpoint"] == f"ipc://{socket_path}"
            if group is not None:
                assert os.stat(socket_path).st_gid == group
                assert os.stat(service.runtime_directory).st_mode & 0o777 == 0o750

            checked = command("check")
            assert checked.returncode == 0, checked.stdout + checked.stderr

            push_frames(f"ipc://{socket_path}", [encode_envelope(numbered(1)), GARBAGE[0]])
            process.wait_for_log("batch_delivered", timeout=60)
            stats = json.loads(command("stats", "--json").stdout)
            assert (stats["pid"], stats["received"], stats["decode_failures"]) == (
                process.pid,
                2,
                1,
            )
            assert "kafka" in command("stats").stdout

            refused = numbered(7, prefix="refused")
            DeadLetters(service.state_directory, Stats()).record(
                encode_envelope(refused), "a sink refused it", sink="kafka", event_id=refused.id
            )
            listed = [
                json.loads(line)
                for line in command("dead-letters", "list", "--json").stdout.splitlines()
            ]
            assert [r["reason"] for r in listed][-1] == "a sink refused it"
            garbage_id, refused_id = listed[0]["id"], listed[-1]["id"]
            assert refused_id in command("dead-letters", "list").stdout
            shown = json.loads(command("dead-letters", "show", refused_id).stdout)
            assert shown["envelope"]["id"] == refused.id
            replayed = command("dead-letters", "replay", refused_id)
            assert replayed.returncode == 0, replayed.stdout + replayed.stderr
            assert refused.id in {
                json.loads(r.value)["event_id"] for r in consume(kafka_bootstrap, topic, 2)
            }
            assert command("dead-letters", "purge", garbage_id).returncode == 0
            assert command("dead-letters", "list").stdout.strip() == "no dead letters"

            # journalctl -u UNIT -o cat | openalgo-forwarder logs -
            logs = subprocess.run(
                [sys.executable, "-m", "forwarder", "logs", "-", "--level", "info"],
                input=process.output(),
                capture_output=True,
                text=True,
                env=cli_env,
                cwd=ROOT,
                timeout=60,
                check=False,
            )
            assert " forwarder_started " in logs.stdout
        finally:
            service.stop()

    def test_two_instances_side_by_side_each_answer_for_themselves(
        self, shared_tmp, kafka_bootstrap
    ):
        """openalgo1 and openalgo2 of the template run at once, each with its own env file,
        socket and state; --instance NAME reaches that one."""
        services = [EmulatedService(Unit(TEMPLATE, name), shared_tmp) for name in ("a1", "a2")]
        try:
            pids = {}
            for service in services:
                install_env_file(
                    service, ORDER_EVENT_MODE="KAFKA", KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap
                )
                pids[service.unit.instance] = service.start(passed_through()).pid
            for name, pid in pids.items():
                result = run_cli(
                    "--root",
                    str(shared_tmp),
                    "--instance",
                    name,
                    "stats",
                    "--json",
                    env=passed_through() | {"HOME": str(shared_tmp)},
                )
                assert json.loads(result.stdout)["pid"] == pid
        finally:
            for service in services:
                service.stop()
