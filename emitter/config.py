"""Reading settings from the environment, shared by the emitter and the forwarder so both agree."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Final

__all__ = [
    "ConfigError",
    "default_endpoint",
    "env_bool",
    "env_int",
    "env_str",
    "ipc_path",
    "is_loopback",
    "order_event_modes",
    "resolve_endpoint",
]

MODES: Final = ("SOCKETIO", "KAFKA")
SOCKET_NAME: Final = "events.sock"
RUNTIME_SUBDIR: Final = "openalgo-forwarder"
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off", ""})


class ConfigError(ValueError):
    """A setting with a value we cannot use; the message names the variable, value and choices."""

    def __init__(self, variable: str, value: object, accepted: str) -> None:
        super().__init__(f"{variable}={value!r} is not valid: expected {accepted}")
        self.variable = variable
        self.value = value
        self.accepted = accepted


def env_str(env: Mapping[str, str], name: str, default: str, *, allow_empty: bool = False) -> str:
    """A string setting, stripped; an empty one is refused unless the caller allows it."""
    value = env.get(name, default).strip()
    if not value and not allow_empty:
        raise ConfigError(name, value, "a non-empty string")
    return value


def env_int(env: Mapping[str, str], name: str, default: int, *, minimum: int = 0) -> int:
    """An integer setting no smaller than `minimum`."""
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        value = None
    if value is None or value < minimum:
        accepted = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ConfigError(name, raw, accepted)
    return value


def env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    """A yes/no setting in any of the usual spellings."""
    raw = env.get(name)
    if raw is None:
        return default
    lowered = raw.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(name, raw, "one of 1, 0, true, false, yes, no, on, off")


def default_endpoint(env: Mapping[str, str] | None = None) -> str:
    """An ipc socket in the user's private runtime directory, never a guessable path in /tmp."""
    env = os.environ if env is None else env
    runtime = env.get("XDG_RUNTIME_DIR") or str(Path.home() / ".local" / "run")
    return f"ipc://{Path(runtime) / RUNTIME_SUBDIR / SOCKET_NAME}"


def ipc_path(endpoint: str) -> Path | None:
    """The filesystem path of an ipc:// endpoint, None for any other transport."""
    return Path(endpoint.removeprefix("ipc://")) if endpoint.startswith("ipc://") else None


def resolve_endpoint(env: Mapping[str, str]) -> str:
    """FORWARDER_ENDPOINT or the default, refusing non-loopback TCP unless explicitly allowed."""
    endpoint = env_str(env, "FORWARDER_ENDPOINT", "", allow_empty=True) or default_endpoint(env)
    allow_remote = env_bool(env, "FORWARDER_ALLOW_REMOTE", default=False)
    accepted = (
        "ipc:///absolute/path or tcp://127.0.0.1:PORT (a loopback address; "
        "set FORWARDER_ALLOW_REMOTE=1 for any other)"
    )
    if endpoint.startswith("ipc://"):
        if not endpoint.removeprefix("ipc://").startswith("/"):
            raise ConfigError("FORWARDER_ENDPOINT", endpoint, accepted)
        return endpoint
    if not endpoint.startswith("tcp://"):
        raise ConfigError("FORWARDER_ENDPOINT", endpoint, accepted)
    host, sep, port = endpoint.removeprefix("tcp://").rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536 or not host:
        raise ConfigError("FORWARDER_ENDPOINT", endpoint, accepted)
    if not allow_remote and not is_loopback(host.strip("[]")):
        raise ConfigError("FORWARDER_ENDPOINT", endpoint, accepted)
    return endpoint


def is_loopback(host: str) -> bool:
    """Whether a host name or address stays on this machine, for settings kept off the network."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def order_event_modes(env: Mapping[str, str]) -> tuple[str, ...]:
    """ORDER_EVENT_MODE: where events go (SOCKETIO, KAFKA or both), read alike on both sides."""
    raw = env.get("ORDER_EVENT_MODE", "SOCKETIO")
    names = [part.strip().upper() for part in raw.split(",")]
    if not all(names) or any(name not in MODES for name in names) or len(set(names)) != len(names):
        raise ConfigError("ORDER_EVENT_MODE", raw, "SOCKETIO, KAFKA or SOCKETIO,KAFKA")
    return tuple(m for m in MODES if m in names)
