"""systemd itself, as far as it runs without being PID 1: its env-file parser, its version, and a
unit's service started the way systemd starts it, with the unit's files below a directory."""

from __future__ import annotations

import ctypes
import glob
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Mapping
from functools import cache
from pathlib import Path

import pytest

from harness.forwarder import ForwarderProcess

_SHARED_LIBRARY = "/usr/lib/*/systemd/libsystemd-shared-*.so"
_Strv = ctypes.POINTER(ctypes.c_char_p)
_Invalid = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_void_p)


class RefusedError(Exception):
    """systemd's parser refused the whole file (a service using it would not start)."""


@cache
def _library() -> ctypes.CDLL:
    found = sorted(glob.glob(_SHARED_LIBRARY))
    if not found:
        pytest.fail(f"systemd's shared library ({_SHARED_LIBRARY}) is missing: make systemd-deps")
    library = ctypes.CDLL(found[-1])
    library.load_env_file.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(_Strv)]
    library.load_env_file.restype = ctypes.c_int
    library.strv_env_clean_with_callback.argtypes = [_Strv, _Invalid, ctypes.c_void_p]
    library.strv_env_clean_with_callback.restype = _Strv
    return library


def environment_file(path: Path) -> dict[str, str]:
    """What `EnvironmentFile=PATH` sets: the very calls systemd makes (load_env_file, then
    strv_env_clean_with_callback, as exec_context_load_environment does)."""
    library = _library()
    loaded = _Strv()
    status = library.load_env_file(None, str(path).encode(), ctypes.byref(loaded))
    if status < 0:
        raise RefusedError(f"load_env_file returned {status}")
    cleaned = library.strv_env_clean_with_callback(loaded, _Invalid(lambda entry, data: None), None)
    values: dict[str, str] = {}
    index = 0
    while cleaned and cleaned[index] is not None:
        name, _, value = cleaned[index].decode().partition("=")
        values[name] = value
        index += 1
    return values


@cache
def version() -> int:
    """The major version of the installed systemd."""
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.fail("systemd-analyze is not installed: make systemd-deps")
    output = subprocess.run([tool, "--version"], capture_output=True, text=True, check=True).stdout
    match = re.match(r"systemd (\d+)", output)
    assert match, output
    return int(match.group(1))


class Unit:
    """A unit file's directives, with an instance's %i (and %%) filled in."""

    def __init__(self, path: Path, instance: str | None = None) -> None:
        self.path = path
        self.instance = instance

    def directives(self, section: str) -> dict[str, list[str]]:
        """Each key of one section with all its values in order (systemd allows repeated keys)."""
        found: dict[str, list[str]] = {}
        current = None
        for raw in self.path.read_text().splitlines():
            line = raw.strip()
            if not line or line.startswith(("#", ";")):
                continue
            if line.startswith("["):
                current = line.strip("[]")
            elif current == section:
                key, _, value = line.partition("=")
                value = value.replace("%%", "\0")
                if self.instance is not None:
                    value = value.replace("%i", self.instance)
                found.setdefault(key.strip(), []).append(value.replace("\0", "%").strip())
        return found

    def one(self, key: str) -> str:
        [value] = self.directives("Service")[key]
        return value


class EmulatedService:
    """The unit's service started as systemd starts it, its files below `root`.

    Read from the unit: ExecStart= (its binary replaced by this checkout's `python -m forwarder`),
    Environment= then EnvironmentFile= (read by systemd's own parser, so the file wins),
    RuntimeDirectory= and StateDirectory= (made with their modes, and named in RUNTIME_DIRECTORY
    and STATE_DIRECTORY), UMask=, Type=notify (NOTIFY_SOCKET: started means READY=1 received),
    WatchdogSec= (WATCHDOG_USEC), KillSignal SIGTERM on stop, and the runtime directory removed
    after it. Not emulated: User=/Group= (the test's own user runs it; the runtime directory gets
    `group`, standing in for Group=), the sandboxing, and journald (the output is kept instead).
    """

    def __init__(self, unit: Unit, root: Path, *, group: int | None = None) -> None:
        self.unit = unit
        self.root = root
        self.group = group
        service = unit.directives("Service")
        self.runtime_directory = root / "run" / unit.one("RuntimeDirectory")
        self.state_directory = root / "var" / "lib" / unit.one("StateDirectory")
        [env_file] = service["EnvironmentFile"]
        self.env_file = root / env_file.lstrip("-/")
        self.process: ForwarderProcess | None = None
        self._notify: socket.socket | None = None

    def environment(self, passed_through: Mapping[str, str]) -> dict[str, str]:
        env = dict(passed_through)
        for assignment in self.unit.directives("Service").get("Environment", []):
            name, _, value = assignment.strip('"').partition("=")
            env[name] = value
        env |= environment_file(self.env_file)
        env["RUNTIME_DIRECTORY"] = str(self.runtime_directory)
        env["STATE_DIRECTORY"] = str(self.state_directory)
        watchdog = self.unit.directives("Service").get("WatchdogSec")
        if watchdog:
            env["WATCHDOG_USEC"] = str(int(watchdog[0].removesuffix("s")) * 1_000_000)
        return env

    def start(self, passed_through: Mapping[str, str]) -> ForwarderProcess:
        service = self.unit.directives("Service")
        for path, mode_key in (
            (self.runtime_directory, "RuntimeDirectoryMode"),
            (self.state_directory, "StateDirectoryMode"),
        ):
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(int(service[mode_key][0], 8))
            if self.group is not None:
                os.chown(path, -1, self.group)
        binary, *args = self.unit.one("ExecStart").split()
        assert Path(binary).name == "openalgo-forwarder"
        assert args == ["run"], "ForwarderProcess runs `python -m forwarder run`"
        self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify_path = self.root / f"{self.runtime_directory.name}.notify"
        self._notify.bind(str(notify_path))
        self._notify.settimeout(0.2)
        env = self.environment(passed_through) | {"NOTIFY_SOCKET": str(notify_path)}
        assert self.unit.one("Type") == "notify"
        self.process = ForwarderProcess(env, umask=int(self.unit.one("UMask"), 8)).start()
        self._wait_ready()
        return self.process

    def _wait_ready(self, timeout: float = 30) -> None:
        assert self._notify is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if b"READY=1" in self._notify.recv(4096):
                    return
            except TimeoutError:
                continue
        pytest.fail(f"{self.unit.path.name}: no READY=1 within {timeout} s")

    def stop(self) -> None:
        """SIGTERM and wait, as systemctl stop does; then systemd removes the runtime directory."""
        if self.process is not None:
            self.process.stop()
        if self._notify is not None:
            self._notify.close()
            self._notify = None
        shutil.rmtree(self.runtime_directory, ignore_errors=True)
