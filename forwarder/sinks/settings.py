"""Each sink's settings, read from the environment only for the modes that are on."""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal, get_args
from urllib.parse import urlsplit

from emitter.config import (
    ConfigError,
    env_bool,
    env_choice,
    env_int,
    env_readable_file,
    env_str,
    host_port,
)
from emitter.contract import RELAY_MIN_SECRET_LENGTH, RELAY_NAMESPACE

__all__ = ["KafkaSettings", "SocketIOSettings"]

Compression = Literal["none", "gzip", "snappy", "lz4", "zstd"]
Acks = Literal["0", "1", "all"]
SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
KafkaClient = Literal["kafka-python", "confluent"]
COMPRESSIONS: Final[tuple[Compression, ...]] = get_args(Compression)
ACKS: Final[tuple[Acks, ...]] = get_args(Acks)
SECURITY_PROTOCOLS: Final[tuple[SecurityProtocol, ...]] = get_args(SecurityProtocol)
SASL_MECHANISMS: Final[tuple[SaslMechanism, ...]] = get_args(SaslMechanism)
CLIENT_LIBRARIES: Final[tuple[KafkaClient, ...]] = get_args(KafkaClient)
MIN_CALL_BYTES: Final = 4096
UNIX_PREFIX: Final = "unix:"
"""SOCKETIO_URL's form for a unix socket, as gunicorn's --bind writes it."""


@dataclass(frozen=True)
class KafkaSettings:
    """The seed's producer settings with its defaults, plus what a secured cluster needs."""

    client: KafkaClient = "kafka-python"
    bootstrap_servers: tuple[str, ...] = ("localhost:9092",)
    topic: str = "from_openalgo_order_events"
    compression: Compression = "snappy"
    batch_size: int = 16384
    linger_ms: int = 10
    acks: Acks = "all"
    retries: int = 3
    request_timeout_ms: int = 30000
    batches_in_flight: int = 4
    """FORWARDER_INFLIGHT_BATCHES: batches handed to the client before the oldest is answered."""
    client_id: str = "openalgo-forwarder"
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
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
        if not all(host_port(server) for server in servers):
            raise ConfigError(
                "KAFKA_BOOTSTRAP_SERVERS", servers_raw, "comma-separated host:port pairs"
            )
        protocol = env_choice(
            env, "KAFKA_SECURITY_PROTOCOL", cls.security_protocol, SECURITY_PROTOCOLS
        )
        mechanism = None
        username = password = None
        if protocol.startswith("SASL_"):
            mechanism = env_choice(env, "KAFKA_SASL_MECHANISM", "PLAIN", SASL_MECHANISMS)
            username = env_str(env, "KAFKA_SASL_USERNAME", "")
            password = env.get("KAFKA_SASL_PASSWORD", "")
            if not password:
                raise ConfigError("KAFKA_SASL_PASSWORD", "", f"a password when {protocol} is used")
        return cls(
            client=_kafka_client(env),
            bootstrap_servers=servers,
            topic=env_str(env, "KAFKA_ORDER_EVENTS_TOPIC", cls.topic),
            compression=env_choice(
                env, "KAFKA_PRODUCER_COMPRESSION", cls.compression, COMPRESSIONS
            ),
            batch_size=env_int(env, "KAFKA_PRODUCER_BATCH_SIZE", cls.batch_size, minimum=1),
            linger_ms=env_int(env, "KAFKA_PRODUCER_LINGER_MS", cls.linger_ms, minimum=0),
            acks=env_choice(env, "KAFKA_PRODUCER_ACKS", cls.acks, ACKS),
            retries=env_int(env, "KAFKA_PRODUCER_RETRIES", cls.retries, minimum=0),
            request_timeout_ms=env_int(
                env, "KAFKA_PRODUCER_REQUEST_TIMEOUT_MS", cls.request_timeout_ms, minimum=1
            ),
            batches_in_flight=env_int(
                env, "FORWARDER_INFLIGHT_BATCHES", cls.batches_in_flight, minimum=1
            ),
            client_id=env_str(env, "KAFKA_CLIENT_ID", cls.client_id),
            security_protocol=protocol,
            sasl_mechanism=mechanism,
            sasl_username=username,
            sasl_password=password,
            ssl_cafile=env_readable_file(env, "KAFKA_SSL_CAFILE"),
            ssl_certfile=env_readable_file(env, "KAFKA_SSL_CERTFILE"),
            ssl_keyfile=env_readable_file(env, "KAFKA_SSL_KEYFILE"),
            wire_debug=env_bool(env, "LOG_WIRE", default=False),
        )

    @property
    def secrets(self) -> tuple[str, ...]:
        """What a log line must never show."""
        return (self.sasl_password,) if self.sasl_password else ()

    def describe(self) -> str:
        """Where events go and how, for `check`; the password only as set or not set."""
        text = (
            f"kafka ({self.client}) {','.join(self.bootstrap_servers)} topic {self.topic} "
            f"compression {self.compression} acks {self.acks} {self.security_protocol}, "
            f"{self.batches_in_flight} batches in flight"
        )
        if self.sasl_mechanism is not None:
            text += (
                f" {self.sasl_mechanism} user {self.sasl_username} "
                f"password {_set(self.sasl_password)}"
            )
        return text


def _kafka_client(env: Mapping[str, str]) -> KafkaClient:
    client = env_choice(env, "KAFKA_CLIENT", KafkaSettings.client, CLIENT_LIBRARIES)
    if client == "confluent" and importlib.util.find_spec("confluent_kafka") is None:
        raise ConfigError(
            "KAFKA_CLIENT",
            client,
            "kafka-python, or confluent once confluent-kafka is installed "
            "(pip install 'openalgo-forwarder[forwarder,confluent]')",
        )
    return client


@dataclass(frozen=True)
class SocketIOSettings:
    """Where the app's Socket.IO server runs and how the forwarder proves it may relay."""

    url: str = "http://127.0.0.1:5000"
    namespace: str = RELAY_NAMESPACE
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
        ca_file = env_readable_file(env, "SOCKETIO_CA_FILE")
        if ca_file is not None and parts.scheme != "https":
            raise ConfigError("SOCKETIO_CA_FILE", ca_file, "empty unless SOCKETIO_URL is https://")
        namespace = env_str(env, "SOCKETIO_NAMESPACE", cls.namespace)
        if not namespace.startswith("/") or namespace == "/":
            raise ConfigError(
                "SOCKETIO_NAMESPACE", namespace, "a namespace such as /openalgo-forwarder, not /"
            )
        secret = env.get("SOCKETIO_RELAY_SECRET", "")
        if 0 < len(secret) < RELAY_MIN_SECRET_LENGTH:
            raise ConfigError(
                "SOCKETIO_RELAY_SECRET",
                "<hidden>",
                f"a shared secret of at least {RELAY_MIN_SECRET_LENGTH} characters (the same as "
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

    @property
    def secrets(self) -> tuple[str, ...]:
        """What a log line must never show."""
        return (self.relay_secret,) if self.relay_secret else ()

    def describe(self) -> str:
        """Where events go and how, for `check`; the secret only as set or not set."""
        return (
            f"socketio {self.url} namespace {self.namespace} "
            f"relay secret {_set(self.relay_secret)} "
            f"calls up to {self.max_call_bytes:,} bytes"
        )


def _set(secret: str | None) -> str:
    return "set" if secret else "not set"
