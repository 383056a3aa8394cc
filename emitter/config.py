"""Reading settings from the environment, shared by the emitter and the forwarder so both agree."""

from __future__ import annotations

import ipaddress
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal, TypeVar, get_args

import zmq
import zmq.auth
from zmq.utils import z85

__all__ = [
    "ConfigError",
    "CurveKeys",
    "curve_client_keys",
    "curve_key",
    "curve_options",
    "default_endpoint",
    "env_bool",
    "env_choice",
    "env_int",
    "env_optional",
    "env_readable_file",
    "env_str",
    "host_port",
    "ipc_path",
    "is_loopback",
    "load_certificate",
    "order_event_modes",
    "resolve_endpoint",
]

Mode = Literal["SOCKETIO", "KAFKA"]
"""Where events go: the names ORDER_EVENT_MODE accepts, read alike by the app and the forwarder."""
MODES: Final[tuple[Mode, ...]] = get_args(Mode)
SOCKET_NAME: Final = "events.sock"
RUNTIME_SUBDIR: Final = "openalgo-forwarder"
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})

Choice = TypeVar("Choice", bound=str)


class ConfigError(ValueError):
    """A setting with a value we cannot use; the message names the variable, value and choices."""

    def __init__(self, variable: str, value: object, accepted: str) -> None:
        super().__init__(f"{variable}={value!r} is not valid: expected {accepted}")
        self.variable = variable
        self.value = value
        self.accepted = accepted


def env_str(env: Mapping[str, str], name: str, default: str, *, allow_empty: bool = False) -> str:
    """A string setting, stripped, empty meaning the default; no value at all is refused unless
    the caller allows it."""
    value = env.get(name, "").strip() or default
    if not value and not allow_empty:
        raise ConfigError(name, value, "a non-empty string")
    return value


def env_int(env: Mapping[str, str], name: str, default: int, *, minimum: int = 0) -> int:
    """An integer setting no smaller than `minimum`; empty means the default."""
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
    """A yes/no setting in any of the usual spellings; empty means the default."""
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    lowered = raw.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(name, raw, "one of 1, 0, true, false, yes, no, on, off")


def env_choice(
    env: Mapping[str, str], name: str, default: Choice, accepted: tuple[Choice, ...]
) -> Choice:
    """One of `accepted` (usually a Literal's `get_args`), in any letter case; empty means the
    default."""
    value = env.get(name, "").strip() or default
    matched = next((choice for choice in accepted if choice.lower() == value.lower()), None)
    if matched is None:
        raise ConfigError(name, value, "one of " + ", ".join(accepted))
    return matched


def env_optional(env: Mapping[str, str], name: str) -> str | None:
    """A string setting, stripped; None when empty."""
    return env.get(name, "").strip() or None


def env_readable_file(env: Mapping[str, str], name: str) -> str | None:
    """The path of a file this process can read; None when empty."""
    path = env_optional(env, name)
    if path is not None and not os.access(path, os.R_OK):
        raise ConfigError(name, path, "the path of a readable file")
    return path


def host_port(text: str) -> tuple[str, int] | None:
    """HOST:PORT with a port from 1 to 65535, an IPv6 address in brackets ([::1]:9464, the
    brackets dropped); None for anything else, so the caller names its variable and value."""
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        host = ""
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host, int(port)


def default_endpoint(env: Mapping[str, str] | None = None) -> str:
    """An ipc socket in the user's private runtime directory, never a guessable path in /tmp."""
    env = os.environ if env is None else env
    runtime = env.get("XDG_RUNTIME_DIR") or str(Path.home() / ".local" / "run")
    return f"ipc://{Path(runtime) / RUNTIME_SUBDIR / SOCKET_NAME}"


def ipc_path(endpoint: str) -> Path | None:
    """The filesystem path of an ipc:// endpoint, None for any other transport."""
    return Path(endpoint.removeprefix("ipc://")) if endpoint.startswith("ipc://") else None


def resolve_endpoint(env: Mapping[str, str], *, curve: bool = False) -> str:
    """FORWARDER_ENDPOINT or the default. tcp:// needs CURVE keys (`curve`): without them it is
    refused unless FORWARDER_ALLOW_INSECURE_TCP=1, and then on a loopback address only; with
    them a non-loopback address still needs FORWARDER_ALLOW_REMOTE=1."""
    endpoint = env_str(env, "FORWARDER_ENDPOINT", "", allow_empty=True) or default_endpoint(env)
    allow_remote = env_bool(env, "FORWARDER_ALLOW_REMOTE", default=False)
    allow_insecure = env_bool(env, "FORWARDER_ALLOW_INSECURE_TCP", default=False)
    accepted = (
        "ipc:///absolute/path, or tcp://HOST:PORT with CURVE keys (openalgo-forwarder keygen) on a "
        "loopback address (FORWARDER_ALLOW_REMOTE=1 for any other), or without keys "
        "FORWARDER_ALLOW_INSECURE_TCP=1 and a loopback address"
    )
    if endpoint.startswith("ipc://"):
        if not endpoint.removeprefix("ipc://").startswith("/"):
            raise ConfigError("FORWARDER_ENDPOINT", endpoint, accepted)
        return endpoint
    if not endpoint.startswith("tcp://"):
        raise ConfigError("FORWARDER_ENDPOINT", endpoint, accepted)
    address = host_port(endpoint.removeprefix("tcp://"))
    if address is None:
        raise ConfigError("FORWARDER_ENDPOINT", endpoint, accepted)
    loopback = is_loopback(address[0])
    if not curve and not (allow_insecure and loopback):
        raise ConfigError("FORWARDER_ENDPOINT", endpoint, accepted)
    if not loopback and not allow_remote:
        raise ConfigError("FORWARDER_ENDPOINT", endpoint, accepted)
    return endpoint


@dataclass(frozen=True)
class CurveKeys:
    """A CURVE key pair and the public key of the peer that listens, in Z85 as ZeroMQ takes them."""

    public: bytes
    secret: bytes = field(repr=False)
    server: bytes


def curve_key(variable: str, value: str) -> bytes:
    """A Z85 public key (40 characters), as keygen prints it."""
    try:
        if len(value) == 40 and len(z85.decode(value)) == 32:
            return value.encode("ascii")
    except (ValueError, KeyError, UnicodeEncodeError, OverflowError, struct.error):
        pass
    raise ConfigError(variable, value, "a CURVE public key: 40 Z85 characters")


def load_certificate(variable: str, path: str) -> tuple[bytes, bytes]:
    """The public and secret key of a certificate file keygen wrote (`NAME.key_secret`)."""
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            variable, path, f"a readable certificate file from openalgo-forwarder keygen ({exc})"
        ) from None
    if secret is None:
        raise ConfigError(
            variable, path, "the certificate with the secret key (NAME.key_secret), not NAME.key"
        )
    return public, secret


def curve_client_keys(env: Mapping[str, str]) -> CurveKeys | None:
    """The emitter's CURVE keys, or None when neither of its two CURVE settings is set."""
    path = env_str(env, "EMITTER_CURVE_SECRET_KEY_FILE", "", allow_empty=True)
    server = env_str(env, "EMITTER_CURVE_SERVER_KEY", "", allow_empty=True)
    if not path and not server:
        return None
    if not path:
        raise ConfigError(
            "EMITTER_CURVE_SECRET_KEY_FILE", "", "the emitter's certificate file, as the server key"
        )
    if not server:
        raise ConfigError(
            "EMITTER_CURVE_SERVER_KEY", "", "the forwarder's public key, as the secret key file"
        )
    public, secret = load_certificate("EMITTER_CURVE_SECRET_KEY_FILE", path)
    return CurveKeys(public, secret, curve_key("EMITTER_CURVE_SERVER_KEY", server))


def curve_options(keys: CurveKeys) -> dict[int, bytes]:
    """The socket options of a CURVE client, to set before connecting."""
    return {
        zmq.CURVE_SECRETKEY: keys.secret,
        zmq.CURVE_PUBLICKEY: keys.public,
        zmq.CURVE_SERVERKEY: keys.server,
    }


def is_loopback(host: str) -> bool:
    """Whether a host name or address stays on this machine, for settings kept off the network."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def order_event_modes(env: Mapping[str, str]) -> tuple[Mode, ...]:
    """ORDER_EVENT_MODE: where events go (SOCKETIO, KAFKA or both), read alike on both sides;
    empty means the default, SOCKETIO."""
    raw = env.get("ORDER_EVENT_MODE", "").strip() or "SOCKETIO"
    names = [part.strip().upper() for part in raw.split(",")]
    if not all(names) or any(name not in MODES for name in names) or len(set(names)) != len(names):
        raise ConfigError("ORDER_EVENT_MODE", raw, "SOCKETIO, KAFKA or SOCKETIO,KAFKA")
    return tuple(m for m in MODES if m in names)
