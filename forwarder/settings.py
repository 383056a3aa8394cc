"""Every setting of the forwarder, validated once at start so a bad value stops it early."""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal, cast
from urllib.parse import urlsplit

from emitter.config import ConfigError, env_int, env_str, resolve_endpoint
from forwarder.metrics import parse_metrics_addr

__all__ = ["KafkaSettings", "Settings", "SocketIOSettings"]

MODES: Final = ("SOCKETIO", "KAFKA")
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
MIN_CALL_BYTES: Final = 4096

LogFormat = Literal["auto", "json", "console"]
BufferKind = Literal["disk", "memory"]
WhenFull = Literal["drop_newest", "drop_oldest"]
FsyncMode = Literal["always", "batch", "off"]
KafkaClient = Literal["kafka-python", "confluent"]


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env.get(name, default).strip()
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


@dataclass(frozen=True)
class SocketIOSettings:
    """Where the app's Socket.IO server runs and how the forwarder proves it may relay."""

    url: str = "http://127.0.0.1:5000"
    namespace: str = "/openalgo-forwarder"
    relay_secret: str = field(default="", repr=False)
    ack_timeout_s: int = 5
    max_call_bytes: int = 262_144
    """Largest relay call on the wire; a quarter of what a Socket.IO server takes by default."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SocketIOSettings:
        url = env_str(env, "SOCKETIO_URL", cls.url)
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError("SOCKETIO_URL", url, "an http:// or https:// URL")
        namespace = env_str(env, "SOCKETIO_NAMESPACE", cls.namespace)
        if not namespace.startswith("/") or namespace == "/":
            raise ConfigError(
                "SOCKETIO_NAMESPACE", namespace, "a namespace such as /openalgo-forwarder, not /"
            )
        secret = env.get("SOCKETIO_RELAY_SECRET", "")
        if len(secret) < 16:
            raise ConfigError(
                "SOCKETIO_RELAY_SECRET",
                "<hidden>" if secret else "",
                "a shared secret of at least 16 characters (the same as the relay's)",
            )
        return cls(
            url=url,
            namespace=namespace,
            relay_secret=secret,
            ack_timeout_s=env_int(env, "SOCKETIO_ACK_TIMEOUT_S", cls.ack_timeout_s, minimum=1),
            max_call_bytes=env_int(
                env, "SOCKETIO_MAX_CALL_BYTES", cls.max_call_bytes, minimum=MIN_CALL_BYTES
            ),
        )


def _default_state_dir(env: Mapping[str, str]) -> Path:
    systemd_state = env.get("STATE_DIRECTORY", "").split(":")[0]
    if systemd_state:
        return Path(systemd_state)
    return Path.home() / ".local" / "state" / "openalgo-forwarder"


@dataclass(frozen=True)
class Settings:
    """The whole configuration; sink sections are present only for the modes that are on."""

    modes: tuple[str, ...] = ("SOCKETIO",)
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
    retry_base_ms: int = 100
    retry_max_ms: int = 30_000
    shutdown_timeout_s: int = 10
    stats_interval_s: int = 60
    log_level: str = "INFO"
    log_format: LogFormat = "auto"
    metrics_addr: tuple[str, int] | None = None
    kafka: KafkaSettings | None = None
    socketio: SocketIOSettings | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        modes = _modes(env)
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
        return cls(
            modes=modes,
            endpoint=resolve_endpoint(env),
            socket_group=_optional(env, "FORWARDER_SOCKET_GROUP"),
            state_dir=state_dir,
            batch_max=env_int(env, "FORWARDER_BATCH_MAX", cls.batch_max, minimum=1),
            batch_linger_ms=env_int(env, "FORWARDER_BATCH_LINGER_MS", cls.batch_linger_ms),
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
            metrics_addr=parse_metrics_addr(env),
            kafka=KafkaSettings.from_env(env) if "KAFKA" in modes else None,
            socketio=SocketIOSettings.from_env(env) if "SOCKETIO" in modes else None,
        )

    @property
    def log_level_number(self) -> int:
        return logging.getLevelNamesMapping()[self.log_level]


def _modes(env: Mapping[str, str]) -> tuple[str, ...]:
    raw = env.get("ORDER_EVENT_MODE", "SOCKETIO")
    accepted = "SOCKETIO, KAFKA or SOCKETIO,KAFKA"
    names = [part.strip().upper() for part in raw.split(",")]
    if not all(names) or any(name not in MODES for name in names) or len(set(names)) != len(names):
        raise ConfigError("ORDER_EVENT_MODE", raw, accepted)
    return tuple(m for m in MODES if m in names)
