"""The systemd unit is valid, hardened, and agrees with the code it starts."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from emitter.config import ipc_path, resolve_endpoint
from forwarder.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "openalgo-forwarder.service"
MAX_EXPOSURE = 1.5
STAND_IN = "/usr/bin/true"
"""An executable present on every systemd machine, for verifying before the package is installed."""


def directives(section: str) -> dict[str, list[str]]:
    """Each key of one section with all its values in order (systemd allows repeated keys)."""
    found: dict[str, list[str]] = {}
    current = None
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = line.strip("[]")
        elif current == section:
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def one(key: str) -> str:
    [value] = directives("Service")[key]
    return value


def systemd_analyze(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.fail("systemd-analyze is not installed: apt-get install systemd to check the unit")
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=60, check=False)


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(s|min)?", value)
    assert match, f"unexpected time span {value!r}"
    return int(match.group(1)) * (60 if match.group(2) == "min" else 1)


class TestSystemdAnalyze:
    def test_verify(self, tmp_path):
        """`systemd-analyze verify` accepts the unit; only a missing binary may be complained of,
        and then a copy whose ExecStart names an existing one must pass cleanly."""
        binary = one("ExecStart").split()[0]
        result = systemd_analyze("verify", str(UNIT))
        if Path(binary).is_file():
            assert (result.returncode, result.stdout + result.stderr) == (0, "")
            return
        assert result.returncode != 0
        [complaint] = result.stderr.strip().splitlines()
        assert f"Command {binary} is not executable" in complaint
        copy = tmp_path / UNIT.name
        copy.write_text(UNIT.read_text().replace(f"ExecStart={binary}", f"ExecStart={STAND_IN}"))
        assert copy.read_text().count(STAND_IN) == 1
        result = systemd_analyze("verify", str(copy))
        assert (result.returncode, result.stdout + result.stderr) == (0, "")

    def test_exposure(self):
        """`systemd-analyze security --offline=true` rates the unit at most 1.5."""
        result = systemd_analyze("security", "--offline=true", str(UNIT))
        assert result.returncode == 0, result.stderr
        match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
        assert match, result.stdout
        assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout


class TestUnitMatchesTheCode:
    def test_exec_start_runs_the_entry_point(self):
        """ExecStart calls the console script pyproject.toml installs, with `run`."""
        scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
        binary, *args = one("ExecStart").split()
        assert Path(binary).name in scripts
        assert args == ["run"]

    def test_stop_timeout_covers_the_drain(self):
        """systemd waits longer than the forwarder's own shutdown drain before killing it."""
        assert seconds(one("TimeoutStopSec")) > Settings().shutdown_timeout_s

    def test_a_configuration_error_is_not_restarted(self):
        """Exit status 2 needs the operator: restarting it every 2 s would only fill the log."""
        assert one("Restart") == "on-failure"
        assert one("RestartPreventExitStatus") == "2"

    def test_notify_with_watchdog(self):
        """The forwarder reports readiness and liveness, and only its main process may."""
        service = directives("Service")
        assert service["Type"] == ["notify"]
        assert service["NotifyAccess"] == ["main"]
        assert seconds(one("WatchdogSec")) > 0

    def test_endpoint_in_the_runtime_directory(self):
        """The event socket is a valid endpoint inside the directory systemd creates for it."""
        environment = dict(
            value.partition("=")[::2] for value in directives("Service")["Environment"]
        )
        endpoint = resolve_endpoint(environment)
        socket_dir = ipc_path(endpoint)
        assert socket_dir is not None
        assert socket_dir.parent == Path("/run") / one("RuntimeDirectory")
        assert environment["FORWARDER_SOCKET_GROUP"] == one("Group")

    def test_can_reach_remote_brokers(self):
        """Hardening leaves IPv4 and IPv6 open and blocks no address, so any Kafka is reachable."""
        service = directives("Service")
        families = " ".join(service["RestrictAddressFamilies"]).split()
        assert {"AF_INET", "AF_INET6", "AF_UNIX"} <= set(families)
        assert "PrivateNetwork" not in service
        assert "IPAddressDeny" not in service
