"""CURVE on a tcp:// endpoint: the forwarder's keys, the emitters it lets in, and `keygen`.

The forwarder is the CURVE server: emitters must know its public key, so a process that takes
the port while the forwarder is down cannot complete a handshake and receives nothing. It lets in
only the public keys listed in FORWARDER_CURVE_CLIENTS_FILE (one Z85 key per line, anything after
it a comment; a line starting with '#' is a comment), read again whenever the file changes,
through a ZAP handler that ZeroMQ is told to require: with the handler gone, no client gets in.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import structlog
import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from emitter.config import ConfigError, curve_key, env_str, load_certificate
from emitter.throttle import Throttle

__all__ = [
    "CLIENTS_FILE",
    "SERVER_NAME",
    "ZAP_DOMAIN",
    "ClientList",
    "CurveServer",
    "keygen",
    "load_server",
    "read_clients",
]

ZAP_DOMAIN: Final = "openalgo-forwarder"
SERVER_NAME: Final = "forwarder"
CLIENTS_FILE: Final = "clients"

log = structlog.get_logger("forwarder.curve")


@dataclass(frozen=True)
class CurveServer:
    """The forwarder's key pair and the file of emitter keys it accepts."""

    public: bytes
    secret: bytes = field(repr=False)
    clients_file: Path

    def start(self, context: zmq.Context[zmq.Socket[bytes]]) -> ThreadAuthenticator:
        """The ZAP handler for `context`, answering from the clients file."""
        authenticator = ThreadAuthenticator(context)
        authenticator.start()
        authenticator.configure_curve_callback(ZAP_DOMAIN, ClientList(self))
        return authenticator

    def secure(self, server_socket: zmq.Socket[bytes]) -> None:
        """Make a socket the CURVE server of this key pair, refusing all if the handler is gone."""
        server_socket.curve_server = True
        server_socket.curve_secretkey = self.secret
        server_socket.curve_publickey = self.public
        server_socket.zap_domain = ZAP_DOMAIN.encode()
        server_socket.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)


def read_clients(variable: str, path: Path) -> frozenset[bytes]:
    """Every public key in an allow-list file; ConfigError naming the line that is not one."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(variable, str(path), f"a readable list of public keys ({exc})") from None
    keys = set()
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):  # no Z85 key starts with '#' (overflow)
            continue
        try:
            keys.add(curve_key(variable, fields[0]))
        except ConfigError:
            raise ConfigError(
                variable, str(path), f"one Z85 public key per line (line {number} is not one)"
            ) from None
    return frozenset(keys)


def load_server(env: Mapping[str, str]) -> CurveServer | None:
    """The forwarder's CURVE settings, or None when FORWARDER_CURVE_SECRET_KEY_FILE is empty."""
    secret_file = env_str(env, "FORWARDER_CURVE_SECRET_KEY_FILE", "", allow_empty=True)
    clients = env_str(env, "FORWARDER_CURVE_CLIENTS_FILE", "", allow_empty=True)
    if not secret_file:
        if clients:
            raise ConfigError(
                "FORWARDER_CURVE_SECRET_KEY_FILE", "", "the forwarder's certificate file as well"
            )
        return None
    if not clients:
        raise ConfigError(
            "FORWARDER_CURVE_CLIENTS_FILE", "", "the file of emitter public keys it accepts"
        )
    public, secret = load_certificate("FORWARDER_CURVE_SECRET_KEY_FILE", secret_file)
    read_clients("FORWARDER_CURVE_CLIENTS_FILE", Path(clients))
    return CurveServer(public, secret, Path(clients))


class ClientList:
    """The ZAP callback: a client key is let in when the clients file lists it (read again
    whenever the file changes) or when it is the forwarder's own, used by `dead-letters replay`."""

    def __init__(self, server: CurveServer) -> None:
        self._server = server
        self._lock = threading.Lock()
        self._seen: tuple[int, int, int] | None = None
        self._keys: frozenset[bytes] = frozenset()
        self._refusals = Throttle()

    def callback(self, domain: str, key: bytes) -> bool:
        """Called by the authenticator thread for each CURVE handshake."""
        allowed = key == self._server.public or key in self._current()
        if not allowed and (held := self._refusals.ready()) is not None:
            log.warning(
                "emitter_key_refused", public_key=key.decode("ascii", "replace"), suppressed=held
            )
        return allowed

    def _current(self) -> frozenset[bytes]:
        path = self._server.clients_file
        with self._lock:
            try:
                info = path.stat()
                seen = (info.st_ino, info.st_size, info.st_mtime_ns)
                if seen != self._seen:
                    self._keys = read_clients("FORWARDER_CURVE_CLIENTS_FILE", path)
                    self._seen = seen
            except (OSError, ConfigError) as exc:
                log.error("curve_clients_unreadable", path=str(path), error=str(exc))
                self._keys, self._seen = frozenset(), None
            return self._keys


def keygen(directory: Path, clients: Sequence[str]) -> list[str]:
    """Write what is missing: the forwarder's certificate, one per client, the clients file.

    Existing files are kept (a second run adds clients); secret files are 0600. Returns the
    settings each side needs, one line each.
    """
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    previous = os.umask(0o077)
    try:
        for name in (SERVER_NAME, *clients):
            if not (directory / f"{name}.key_secret").exists():
                zmq.auth.create_certificates(str(directory), name)
    finally:
        os.umask(previous)
    server_public, _ = zmq.auth.load_certificate(str(directory / f"{SERVER_NAME}.key"))
    listed_file = directory / CLIENTS_FILE
    listed = (
        read_clients("clients file", listed_file) if listed_file.exists() else frozenset[bytes]()
    )
    with listed_file.open("a", encoding="utf-8") as out:
        for name in clients:
            public, _ = zmq.auth.load_certificate(str(directory / f"{name}.key"))
            if public not in listed:
                out.write(f"{public.decode()}  {name}\n")
    lines = [
        f"forwarder: FORWARDER_CURVE_SECRET_KEY_FILE={directory / SERVER_NAME}.key_secret",
        f"forwarder: FORWARDER_CURVE_CLIENTS_FILE={listed_file}",
    ]
    for name in clients:
        lines.append(f"{name}: EMITTER_CURVE_SECRET_KEY_FILE={directory / name}.key_secret")
        lines.append(f"{name}: EMITTER_CURVE_SERVER_KEY='{server_public.decode()}'")
    return lines
