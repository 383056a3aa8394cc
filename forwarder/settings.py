"""Every setting of the forwarder, validated once at start so a bad value stops it early."""

from __future__ import annotations

import grp
import logging
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal, get_args

from zmq.utils import z85

from emitter.config import (
    SOCKET_NAME,
    ConfigError,
    Mode,
    env_bool,
    env_choice,
    env_int,
    env_optional,
    env_str,
    host_port,
    ipc_path,
    is_loopback,
    order_event_modes,
    resolve_endpoint,
)
from forwarder.curve import CurveServer, load_server
from forwarder.sinks.table import SINKS, SinkSettings

__all__ = ["MetricsSettings", "Settings"]

LogFormat = Literal["auto", "json", "console"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
BufferKind = Literal["disk", "memory"]
WhenFull = Literal["drop_newest", "drop_oldest"]
FsyncMode = Literal["always", "batch", "off"]
MIN_BUFFER_BYTES: Final = 1 << 20
MIN_DEAD_LETTER_BYTES: Final = 64 << 10
MAX_FRAME_BYTES: Final = 320 << 10
"""Above the emitter's largest frame (EMITTER_MAX_EVENT_BYTES, the whole encoded envelope: 256 KiB
by default), so every event the app accepts is read; `check` fails when the two disagree."""
MIN_FRAME_BYTES: Final = 64 << 10


@dataclass(frozen=True)
class MetricsSettings:
    """Where /metrics, /healthz and /readyz are served: loopback only unless allowed."""

    host: str
    port: int

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> MetricsSettings | None:
        """FORWARDER_METRICS_ADDR; None when empty (no metrics served)."""
        raw = env_str(env, "FORWARDER_METRICS_ADDR", "", allow_empty=True)
        if not raw:
            return None
        allow_remote = env_bool(env, "FORWARDER_METRICS_ALLOW_REMOTE", default=False)
        accepted = (
            "HOST:PORT on a loopback address such as 127.0.0.1:9464 or [::1]:9464 "
            "(set FORWARDER_METRICS_ALLOW_REMOTE=1 for any other), or empty to serve no metrics"
        )
        address = host_port(raw)
        if address is None or not (allow_remote or is_loopback(address[0])):
            raise ConfigError("FORWARDER_METRICS_ADDR", raw, accepted)
        return cls(*address)

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port


def _default_state_dir(env: Mapping[str, str]) -> Path:
    systemd_state = env.get("STATE_DIRECTORY", "").split(":")[0]
    if systemd_state:
        return Path(systemd_state)
    return Path.home() / ".local" / "state" / "openalgo-forwarder"


def _systemd_runtime_dir(env: Mapping[str, str]) -> Path | None:
    """$RUNTIME_DIRECTORY, which systemd sets (and makes) for a unit with RuntimeDirectory=."""
    runtime = env.get("RUNTIME_DIRECTORY", "").split(":")[0]
    return Path(runtime) if runtime else None


def _endpoint(env: Mapping[str, str], *, curve: bool) -> str:
    """FORWARDER_ENDPOINT; when empty under systemd, the socket in the unit's runtime directory."""
    runtime = _systemd_runtime_dir(env)
    if runtime is not None and not env.get("FORWARDER_ENDPOINT", "").strip():
        env = {**env, "FORWARDER_ENDPOINT": f"ipc://{runtime / SOCKET_NAME}"}
    return resolve_endpoint(env, curve=curve)


def _socket_group(env: Mapping[str, str], endpoint: str) -> str | None:
    """FORWARDER_SOCKET_GROUP; when empty under systemd, the group systemd gave the runtime
    directory holding the socket (the unit's Group=), if that directory lets its group in."""
    named = env_optional(env, "FORWARDER_SOCKET_GROUP")
    runtime = _systemd_runtime_dir(env)
    socket_path = ipc_path(endpoint)
    if named is not None or runtime is None or socket_path is None:
        return named
    try:
        info = runtime.stat()
    except OSError:
        return None
    if socket_path.parent != runtime or not info.st_mode & stat.S_IXGRP:
        return None
    try:
        return grp.getgrgid(info.st_gid).gr_name
    except KeyError:
        return None


@dataclass(frozen=True)
class Settings:
    """The whole configuration; sink sections are present only for the modes that are on."""

    modes: tuple[Mode, ...] = ("SOCKETIO",)
    endpoint: str = ""
    socket_group: str | None = None
    state_dir: Path = Path()
    batch_max: int = 5000
    batch_linger_ms: int = 5
    queue_max: int = 100_000
    buffer: BufferKind = "disk"
    buffer_max_bytes: int = 256 << 20
    when_full: WhenFull = "drop_newest"
    fsync: FsyncMode = "batch"
    dead_letter_max_bytes: int = 64 << 20
    max_frame_bytes: int = MAX_FRAME_BYTES
    retry_base_ms: int = 100
    retry_max_ms: int = 30_000
    shutdown_timeout_s: int = 10
    stats_interval_s: int = 60
    log_level: LogLevel = "INFO"
    log_format: LogFormat = "auto"
    log_wire: bool = False
    metrics: MetricsSettings | None = None
    curve: CurveServer | None = None
    sinks: Mapping[Mode, SinkSettings] = field(default_factory=dict)
    """The settings of each configured sink, by its ORDER_EVENT_MODE name."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        modes = order_event_modes(env)
        state_dir = Path(
            env_str(env, "FORWARDER_STATE_DIR", str(_default_state_dir(env)))
        ).expanduser()
        retry_base_ms = env_int(env, "FORWARDER_RETRY_BASE_MS", cls.retry_base_ms, minimum=1)
        retry_max_ms = env_int(env, "FORWARDER_RETRY_MAX_MS", cls.retry_max_ms, minimum=1)
        if retry_max_ms < retry_base_ms:
            raise ConfigError(
                "FORWARDER_RETRY_MAX_MS",
                retry_max_ms,
                f"at least FORWARDER_RETRY_BASE_MS ({retry_base_ms})",
            )
        curve = load_server(env)
        endpoint = _endpoint(env, curve=curve is not None)
        return cls(
            modes=modes,
            endpoint=endpoint,
            socket_group=_socket_group(env, endpoint),
            state_dir=state_dir,
            batch_max=env_int(env, "FORWARDER_BATCH_MAX", cls.batch_max, minimum=1),
            batch_linger_ms=env_int(env, "FORWARDER_BATCH_LINGER_MS", cls.batch_linger_ms),
            queue_max=env_int(env, "FORWARDER_QUEUE_MAX", cls.queue_max, minimum=1),
            buffer=env_choice(env, "FORWARDER_BUFFER", cls.buffer, get_args(BufferKind)),
            buffer_max_bytes=env_int(
                env, "FORWARDER_BUFFER_MAX_BYTES", cls.buffer_max_bytes, minimum=MIN_BUFFER_BYTES
            ),
            when_full=env_choice(env, "FORWARDER_WHEN_FULL", cls.when_full, get_args(WhenFull)),
            fsync=env_choice(env, "FORWARDER_FSYNC", cls.fsync, get_args(FsyncMode)),
            dead_letter_max_bytes=env_int(
                env,
                "FORWARDER_DEAD_LETTER_MAX_BYTES",
                cls.dead_letter_max_bytes,
                minimum=MIN_DEAD_LETTER_BYTES,
            ),
            max_frame_bytes=env_int(
                env, "FORWARDER_MAX_FRAME_BYTES", cls.max_frame_bytes, minimum=MIN_FRAME_BYTES
            ),
            retry_base_ms=retry_base_ms,
            retry_max_ms=retry_max_ms,
            shutdown_timeout_s=env_int(
                env, "FORWARDER_SHUTDOWN_TIMEOUT_S", cls.shutdown_timeout_s, minimum=0
            ),
            stats_interval_s=env_int(
                env, "FORWARDER_STATS_INTERVAL_S", cls.stats_interval_s, minimum=0
            ),
            log_level=env_choice(env, "LOG_LEVEL", cls.log_level, get_args(LogLevel)),
            log_format=env_choice(env, "LOG_FORMAT", cls.log_format, get_args(LogFormat)),
            log_wire=env_bool(env, "LOG_WIRE", default=False),
            metrics=MetricsSettings.from_env(env),
            curve=curve,
            sinks={
                mode: kind.settings.from_env(env) for mode, kind in SINKS.items() if mode in modes
            },
        )

    @property
    def log_level_number(self) -> int:
        return logging.getLevelNamesMapping()[self.log_level]

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every secret a log line must never show: each sink's (the SASL password, the relay
        secret) and the CURVE secret key (as configured and in its raw bytes' hex)."""
        found = [secret for sink in self.sinks.values() for secret in sink.secrets]
        if self.curve is not None:
            found += [self.curve.secret.decode(), z85.decode(self.curve.secret).hex()]
        return tuple(found)
