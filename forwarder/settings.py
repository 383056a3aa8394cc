"""Every setting of the forwarder, validated once at start so a bad value stops it early."""

from __future__ import annotations

import grp
import importlib.util
import logging
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Final, Literal, cast
from urllib.parse import urlsplit

from zmq.utils import z85

from emitter.config import (
    SOCKET_NAME,
    ConfigError,
    env_bool,
    env_int,
    env_str,
    ipc_path,
    order_event_modes,
    resolve_endpoint,
)
from forwarder.curve import CurveServer, load_server
from forwarder.metrics import parse_metrics_addr

__all__ = ["KafkaSettings", "Settings", "SocketIOSettings"]

COMPRESSIONS: Final = ("none", "gzip", "snappy", "lz4", "zstd")
ACKS: Final = ("0", "1", "all")
SECURITY_PROTOCOLS: Final = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS: Final = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
CLIENT_LIBRARIES: Final = ("kafka-python", "confluent")
LOGGING_FORMATS: Final = ("auto", "json", "console")
LOGGING_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR")
BUFFERS: Final = ("disk", "memory")
WHEN_FULL: Final = ("drop_newest", "drop_oldest")
FSYNC: Final = ("always", "batch", "off")
MIN_BUFFER_BYTES: Final = 1 << 20
MIN_DEAD_LETTER_BYTES: Final = 64 << 10
MAX_FRAME_BYTES: Final = 320 << 10
"""Above the emitter's largest frame (EMITTER_MAX_EVENT_BYTES, the whole encoded envelope: 256 KiB
by default), so every event the app accepts is read; `check` fails when the two disagree."""
MIN_FRAME_BYTES: Final = 64 << 10
MIN_RELAY_SECRET_LENGTH: Final = 16
"""What emitter.relay accepts; not imported from there, which needs the Socket.IO package."""
MIN_CALL_BYTES: Final = 4096

LogFormat = Literal["auto", "json", "console"]
BufferKind = Literal["disk", "memory"]
WhenFull = Literal["drop_newest", "drop_oldest"]
FsyncMode = Literal["always", "batch", "off"]
KafkaClient = Literal["kafka-python", "confluent"]


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env.get(name, "").strip() or default
    matched = next((c for c in choices if c.lower() == value.lower()), None)
    if matched is None:
        raise ConfigError(name, value, "one of " + ", ".join(choices))
    return matched


def _optional(env: Mapping[str, str], name: str) -> str | None:
    return env.get(name, "").strip() or None


def _readable_file(env: Mapping[str, str], name: str) -> str | None:
    path = _optional(env, name)
    if path is not None and not os.access(path, os.R_OK):
        raise ConfigError(name, path, "the path of a readable file")
    return path


@dataclass(frozen=True)
class KafkaSettings:
    """The seed's producer settings with its defaults, plus what a secured cluster needs."""

    client: KafkaClient = "kafka-python"
    bootstrap_servers: tuple[str, ...] = ("localhost:9092",)
    topic: str = "from_openalgo_order_events"
    compression: str = "snappy"
    batch_size: int = 16384
    linger_ms: int = 10
    acks: str = "all"
    retries: int = 3
    request_timeout_ms: int = 30000
    client_id: str = "openalgo-forwarder"
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    wire_debug: bool = False
    """LOG_WIRE=1: librdkafka's own debug contexts for the broker protocol are switched on."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> KafkaSettings:
        servers_raw = env_str(env, "KAFKA_BOOTSTRAP_SERVERS", "localhost:9092")
        servers = tuple(s.strip() for s in servers_raw.split(",") if s.strip())
        for server in servers:
            host, sep, port = server.rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ConfigError(
                    "KAFKA_BOOTSTRAP_SERVERS", servers_raw, "comma-separated host:port pairs"
                )
        protocol = _choice(env, "KAFKA_SECURITY_PROTOCOL", "PLAINTEXT", SECURITY_PROTOCOLS)
        mechanism = None
        username = password = None
        if protocol.startswith("SASL_"):
            mechanism = _choice(env, "KAFKA_SASL_MECHANISM", "PLAIN", SASL_MECHANISMS)
            username = env_str(env, "KAFKA_SASL_USERNAME", "")
            password = env.get("KAFKA_SASL_PASSWORD", "")
            if not password:
                raise ConfigError("KAFKA_SASL_PASSWORD", "", f"a password when {protocol} is used")
        return cls(
            client=_kafka_client(env),
            bootstrap_servers=servers,
            topic=env_str(env, "KAFKA_ORDER_EVENTS_TOPIC", cls.topic),
            compression=_choice(env, "KAFKA_PRODUCER_COMPRESSION", cls.compression, COMPRESSIONS),
            batch_size=env_int(env, "KAFKA_PRODUCER_BATCH_SIZE", cls.batch_size, minimum=1),
            linger_ms=env_int(env, "KAFKA_PRODUCER_LINGER_MS", cls.linger_ms, minimum=0),
            acks=_choice(env, "KAFKA_PRODUCER_ACKS", cls.acks, ACKS),
            retries=env_int(env, "KAFKA_PRODUCER_RETRIES", cls.retries, minimum=0),
            request_timeout_ms=env_int(
                env, "KAFKA_PRODUCER_REQUEST_TIMEOUT_MS", cls.request_timeout_ms, minimum=1
            ),
            client_id=env_str(env, "KAFKA_CLIENT_ID", cls.client_id),
            security_protocol=protocol,
            sasl_mechanism=mechanism,
            sasl_username=username,
            sasl_password=password,
            ssl_cafile=_readable_file(env, "KAFKA_SSL_CAFILE"),
            ssl_certfile=_readable_file(env, "KAFKA_SSL_CERTFILE"),
            ssl_keyfile=_readable_file(env, "KAFKA_SSL_KEYFILE"),
        )


def _kafka_client(env: Mapping[str, str]) -> KafkaClient:
    client = _choice(env, "KAFKA_CLIENT", KafkaSettings.client, CLIENT_LIBRARIES)
    if client == "confluent" and importlib.util.find_spec("confluent_kafka") is None:
        raise ConfigError(
            "KAFKA_CLIENT",
            client,
            "kafka-python, or confluent once confluent-kafka is installed "
            "(pip install 'openalgo-forwarder[forwarder,confluent]')",
        )
    return cast(KafkaClient, client)


UNIX_PREFIX: Final = "unix:"
"""SOCKETIO_URL's form for a unix socket, as gunicorn's --bind writes it."""


@dataclass(frozen=True)
class SocketIOSettings:
    """Where the app's Socket.IO server runs and how the forwarder proves it may relay."""

    url: str = "http://127.0.0.1:5000"
    namespace: str = "/openalgo-forwarder"
    relay_secret: str = field(default="", repr=False)
    """Empty until the operator sets it: the sink then holds events and says what is missing."""
    ack_timeout_s: int = 5
    ca_file: str | None = None
    max_call_bytes: int = 262_144
    """Largest relay call on the wire; a quarter of what a Socket.IO server takes by default."""

    @property
    def unix_socket(self) -> str | None:
        """The socket path when SOCKETIO_URL is unix:/PATH, else None."""
        return self.url.removeprefix(UNIX_PREFIX) if self.url.startswith(UNIX_PREFIX) else None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SocketIOSettings:
        url = env_str(env, "SOCKETIO_URL", cls.url)
        parts = urlsplit(url)
        unix_path = url.removeprefix(UNIX_PREFIX) if url.startswith(UNIX_PREFIX) else None
        if (unix_path is None or not unix_path.startswith("/")) and (
            parts.scheme not in ("http", "https") or not parts.hostname
        ):
            raise ConfigError(
                "SOCKETIO_URL",
                url,
                "an http:// or https:// URL, or unix:/absolute/path of the app's socket "
                "(gunicorn's --bind unix:PATH)",
            )
        ca_file = _readable_file(env, "SOCKETIO_CA_FILE")
        if ca_file is not None and parts.scheme != "https":
            raise ConfigError("SOCKETIO_CA_FILE", ca_file, "empty unless SOCKETIO_URL is https://")
        namespace = env_str(env, "SOCKETIO_NAMESPACE", cls.namespace)
        if not namespace.startswith("/") or namespace == "/":
            raise ConfigError(
                "SOCKETIO_NAMESPACE", namespace, "a namespace such as /openalgo-forwarder, not /"
            )
        secret = env.get("SOCKETIO_RELAY_SECRET", "")
        if 0 < len(secret) < MIN_RELAY_SECRET_LENGTH:
            raise ConfigError(
                "SOCKETIO_RELAY_SECRET",
                "<hidden>",
                f"a shared secret of at least {MIN_RELAY_SECRET_LENGTH} characters (the same as "
                "the relay's), or empty until it is known",
            )
        return cls(
            url=url,
            namespace=namespace,
            relay_secret=secret,
            ack_timeout_s=env_int(env, "SOCKETIO_ACK_TIMEOUT_S", cls.ack_timeout_s, minimum=1),
            ca_file=ca_file,
            max_call_bytes=env_int(
                env, "SOCKETIO_MAX_CALL_BYTES", cls.max_call_bytes, minimum=MIN_CALL_BYTES
            ),
        )


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
    named = _optional(env, "FORWARDER_SOCKET_GROUP")
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

    modes: tuple[str, ...] = ("SOCKETIO",)
    endpoint: str = ""
    socket_group: str | None = None
    state_dir: Path = Path()
    batch_max: int = 5000
    batch_linger_ms: int = 5
    inflight_batches: int = 4
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
    log_level: str = "INFO"
    log_format: LogFormat = "auto"
    log_wire: bool = False
    metrics_addr: tuple[str, int] | None = None
    curve: CurveServer | None = None
    kafka: KafkaSettings | None = None
    socketio: SocketIOSettings | None = None

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
        log_format = _choice(env, "LOG_FORMAT", "auto", LOGGING_FORMATS)
        curve = load_server(env)
        log_wire = env_bool(env, "LOG_WIRE", default=False)
        endpoint = _endpoint(env, curve=curve is not None)
        kafka = KafkaSettings.from_env(env) if "KAFKA" in modes else None
        return cls(
            modes=modes,
            endpoint=endpoint,
            socket_group=_socket_group(env, endpoint),
            state_dir=state_dir,
            batch_max=env_int(env, "FORWARDER_BATCH_MAX", cls.batch_max, minimum=1),
            batch_linger_ms=env_int(env, "FORWARDER_BATCH_LINGER_MS", cls.batch_linger_ms),
            inflight_batches=env_int(
                env, "FORWARDER_INFLIGHT_BATCHES", cls.inflight_batches, minimum=1
            ),
            queue_max=env_int(env, "FORWARDER_QUEUE_MAX", cls.queue_max, minimum=1),
            buffer=cast(BufferKind, _choice(env, "FORWARDER_BUFFER", cls.buffer, BUFFERS)),
            buffer_max_bytes=env_int(
                env, "FORWARDER_BUFFER_MAX_BYTES", cls.buffer_max_bytes, minimum=MIN_BUFFER_BYTES
            ),
            when_full=cast(WhenFull, _choice(env, "FORWARDER_WHEN_FULL", cls.when_full, WHEN_FULL)),
            fsync=cast(FsyncMode, _choice(env, "FORWARDER_FSYNC", cls.fsync, FSYNC)),
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
            log_level=_choice(env, "LOG_LEVEL", cls.log_level, LOGGING_LEVELS),
            log_format=cast(LogFormat, log_format),
            log_wire=log_wire,
            metrics_addr=parse_metrics_addr(env),
            curve=curve,
            kafka=None if kafka is None else replace(kafka, wire_debug=log_wire),
            socketio=SocketIOSettings.from_env(env) if "SOCKETIO" in modes else None,
        )

    @property
    def log_level_number(self) -> int:
        return logging.getLevelNamesMapping()[self.log_level]

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every secret a log line must never show: the SASL password, the relay secret and the
        CURVE secret key (as configured and in its raw bytes' hex)."""
        found = []
        if self.kafka is not None and self.kafka.sasl_password:
            found.append(self.kafka.sasl_password)
        if self.socketio is not None and self.socketio.relay_secret:
            found.append(self.socketio.relay_secret)
        if self.curve is not None:
            found += [self.curve.secret.decode(), z85.decode(self.curve.secret).hex()]
        return tuple(found)
