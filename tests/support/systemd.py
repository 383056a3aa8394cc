"""systemd itself, as far as it runs without being PID 1: its env-file parser and its version."""

from __future__ import annotations

import ctypes
import glob
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

import pytest

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
