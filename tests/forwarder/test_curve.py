"""CURVE on tcp://: keygen, the clients file, and who gets frames through to whom."""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
import zmq.auth
import zmq.utils.monitor

from emitter.config import ConfigError, CurveKeys, curve_options
from emitter.publisher import publisher_from_env
from forwarder.curve import ClientList, CurveServer, keygen, load_server, read_clients
from forwarder.source import Source
from harness.forwarder import ForwarderProcess, forwarder_env, run_cli
from harness.net import free_port


@pytest.fixture
def keys(tmp_path) -> Path:
    directory = tmp_path / "keys"
    keygen(directory, ["app", "other"])
    return directory


def certificate(directory: Path, name: str) -> tuple[bytes, bytes]:
    public, secret = zmq.auth.load_certificate(str(directory / f"{name}.key_secret"))
    assert secret is not None
    return public, secret


def server_of(keys: Path, clients_file: Path | None = None) -> CurveServer:
    public, secret = certificate(keys, "forwarder")
    return CurveServer(public, secret, clients_file or keys / "clients")


def client_keys(keys: Path, name: str, server: bytes | None = None) -> CurveKeys:
    public, secret = certificate(keys, name)
    return CurveKeys(public, secret, server or certificate(keys, "forwarder")[0])


HANDSHAKE_ENDED = (
    zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_DISCONNECTED
)


def push(endpoint: str, frame: bytes, curve: CurveKeys | None) -> None:
    """Send one frame and close once the handshake has ended either way: flushed when it
    succeeded, dropped when it did not."""
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sender = context.socket(zmq.PUSH)
    for option, value in ({} if curve is None else curve_options(curve)).items():
        sender.setsockopt(option, value)
    # Nothing waits for ever: a handshake that failed first leaves no pipe to queue the frame in.
    sender.setsockopt(zmq.LINGER, 0)
    sender.setsockopt(zmq.SNDTIMEO, 10_000)
    monitor = sender.get_monitor_socket(HANDSHAKE_ENDED)
    try:
        sender.connect(endpoint)
        try:
            sender.send(frame)
        except zmq.Again:
            assert curve is None, "a client with keys could not queue its frame"
            return
        assert monitor.poll(10_000), "the handshake neither succeeded nor failed"
        outcome = zmq.utils.monitor.recv_monitor_message(monitor)["event"]
        sender.setsockopt(zmq.LINGER, 10_000 if outcome == zmq.EVENT_HANDSHAKE_SUCCEEDED else 0)
    finally:
        sender.disable_monitor()
        monitor.close(linger=0)
        sender.close()
        context.term()


def received(source: Source, timeout_ms: int = 1000) -> list[bytes]:
    return source.receive(timeout_ms)


@pytest.fixture
def curve_source(keys) -> Iterator[Source]:
    source = Source(f"tcp://127.0.0.1:{free_port()}", curve=server_of(keys))
    source.bind()
    try:
        yield source
    finally:
        source.close()


class TestKeygen:
    def test_it_writes_private_secret_files_and_lists_the_clients(self, tmp_path):
        """Secret keys are 0600 in a 0700 directory; the clients file names each public key."""
        directory = tmp_path / "keys"
        lines = keygen(directory, ["app1", "app2"])
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        for name in ("forwarder", "app1", "app2"):
            assert stat.S_IMODE((directory / f"{name}.key_secret").stat().st_mode) == 0o600
        listed = read_clients("F", directory / "clients")
        assert listed == {certificate(directory, "app1")[0], certificate(directory, "app2")[0]}
        server_public = certificate(directory, "forwarder")[0].decode()
        assert f"app1: EMITTER_CURVE_SERVER_KEY='{server_public}'" in lines
        assert f"forwarder: FORWARDER_CURVE_CLIENTS_FILE={directory / 'clients'}" in lines

    def test_a_second_run_keeps_every_key_and_adds_new_clients(self, keys):
        """Running it again for a new emitter must not lock the others out."""
        before = {path.name: path.read_bytes() for path in keys.iterdir()}
        keygen(keys, ["app", "third"])
        for name, content in before.items():
            if name != "clients":
                assert (keys / name).read_bytes() == content
        assert len(read_clients("F", keys / "clients")) == 3


class TestClientsFile:
    def test_comments_blank_lines_and_names_are_allowed(self, tmp_path, keys):
        """One key per line with a name after it; '#' lines and blank lines are skipped."""
        key = certificate(keys, "app")[0].decode()
        path = tmp_path / "clients"
        path.write_text(f"# emitters of this host\n\n  {key}  app # the web app\n")
        assert read_clients("F", path) == {key.encode()}

    def test_a_line_that_is_no_key_is_refused_with_its_number(self, tmp_path):
        path = tmp_path / "clients"
        path.write_text("not-a-key\n")
        with pytest.raises(ConfigError, match="line 1 is not one"):
            read_clients("FORWARDER_CURVE_CLIENTS_FILE", path)

    @pytest.mark.parametrize(
        ("env", "variable"),
        [
            ({"FORWARDER_CURVE_CLIENTS_FILE": "/x"}, "FORWARDER_CURVE_SECRET_KEY_FILE"),
            ({"FORWARDER_CURVE_SECRET_KEY_FILE": "/x"}, "FORWARDER_CURVE_CLIENTS_FILE"),
        ],
    )
    def test_one_setting_without_the_other_is_refused(self, env, variable):
        with pytest.raises(ConfigError) as caught:
            load_server(env)
        assert caught.value.variable == variable

    def test_the_public_half_is_no_server_certificate(self, keys):
        """forwarder.key holds no secret: naming it is a mistake said plainly."""
        env = {
            "FORWARDER_CURVE_SECRET_KEY_FILE": str(keys / "forwarder.key"),
            "FORWARDER_CURVE_CLIENTS_FILE": str(keys / "clients"),
        }
        with pytest.raises(ConfigError, match="key_secret"):
            load_server(env)

    def test_a_changed_file_is_read_again(self, tmp_path, keys):
        """A client added to the file is let in without restarting the forwarder."""
        path = tmp_path / "clients"
        path.write_text("")
        allowed = ClientList(server_of(keys, path))
        app = certificate(keys, "app")[0]
        assert not allowed.callback("d", app)
        path.write_text(app.decode() + " app\n")
        assert allowed.callback("d", app)


class TestWhoGetsThrough:
    def test_a_listed_emitter_delivers(self, keys, curve_source):
        push(curve_source.endpoint, b"from app", client_keys(keys, "app"))
        assert received(curve_source) == [b"from app"]
        assert curve_source.connection_events()[1] == 0

    def test_an_unlisted_key_is_refused_and_counted(self, keys, tmp_path):
        """A key pair the clients file does not name gets nothing through."""
        path = tmp_path / "clients"
        path.write_text(certificate(keys, "app")[0].decode() + "\n")
        source = Source(f"tcp://127.0.0.1:{free_port()}", curve=server_of(keys, path))
        source.bind()
        try:
            push(source.endpoint, b"forged order_notification", client_keys(keys, "other"))
            assert received(source, 200) == []
            assert source.connection_events()[1] >= 1
        finally:
            source.close()

    def test_a_client_without_curve_is_refused(self, curve_source):
        """A local user pushing a plain frame to the port is not heard."""
        push(curve_source.endpoint, b"forged", None)
        assert received(curve_source, 200) == []
        assert curve_source.connection_events()[1] >= 1

    def test_the_forwarders_own_key_is_accepted_for_replay(self, keys, curve_source):
        """`dead-letters replay` speaks with the forwarder's keys."""
        public, secret = certificate(keys, "forwarder")
        push(curve_source.endpoint, b"replayed", CurveKeys(public, secret, public))
        assert received(curve_source) == [b"replayed"]

    @pytest.mark.parametrize("impostor_curve", [False, True])
    def test_a_process_taking_the_port_while_the_forwarder_is_down_gets_nothing(
        self, keys, impostor_curve
    ):
        """The emitter checks the server's public key: whoever binds the port without the
        forwarder's secret key cannot complete the handshake, plain or with keys of its own."""
        endpoint = f"tcp://127.0.0.1:{free_port()}"
        context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        impostor = context.socket(zmq.PULL)
        impostor.setsockopt(zmq.LINGER, 0)
        if impostor_curve:
            public, secret = zmq.curve_keypair()
            impostor.curve_server = True
            impostor.curve_secretkey = secret
            impostor.curve_publickey = public
        impostor.bind(endpoint)
        try:
            push(endpoint, b"an order of alice", client_keys(keys, "app"))
            assert impostor.poll(200) == 0
        finally:
            impostor.close()
            context.term()


@pytest.mark.integration
class TestEndToEnd:
    def test_the_real_emitter_reaches_the_daemon_over_curve(self, keys, tmp_path, forwarders):
        """keygen's settings on both sides: the publisher's event is received by the forwarder
        process; a publisher with another client's keys not in the file gets nothing in."""
        endpoint = f"tcp://127.0.0.1:{free_port()}"
        env = forwarder_env(
            tmp_path,
            ORDER_EVENT_MODE="KAFKA",
            KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}",
            FORWARDER_ENDPOINT=endpoint,
            FORWARDER_CURVE_SECRET_KEY_FILE=str(keys / "forwarder.key_secret"),
            FORWARDER_CURVE_CLIENTS_FILE=str(keys / "clients"),
        )
        process = ForwarderProcess(env)
        forwarders.append(process)
        process.start()
        server_key = certificate(keys, "forwarder")[0].decode()
        publisher = publisher_from_env(
            {
                "FORWARDER_ENDPOINT": endpoint,
                "EMITTER_CURVE_SECRET_KEY_FILE": str(keys / "app.key_secret"),
                "EMITTER_CURVE_SERVER_KEY": server_key,
            }
        )
        assert publisher.publish_order_event("alice", "SBIN-EQ", "BUY", "ORD1", "live")
        publisher.close()
        deadline = time.monotonic() + 30
        stats = json.loads(run_cli("stats", "--json", env=env).stdout)
        while stats["received"] < 1 and time.monotonic() < deadline:
            stats = json.loads(run_cli("stats", "--json", env=env).stdout)
        assert stats["received"] == 1
        assert os.stat(keys / "forwarder.key_secret").st_mode & 0o077 == 0

    def test_check_compares_the_emitter_keys_with_the_forwarders(self, keys, tmp_path):
        """With both sides' settings in one env file, `check` says whether the emitter's server
        key is this forwarder's public key."""
        env_file = tmp_path / "both.env"
        forwarder_lines = [line for line in keygen(keys, ["app"]) if line.startswith("forwarder")]
        app_lines = [line for line in keygen(keys, ["app"]) if line.startswith("app")]
        body = [line.split(": ", 1)[1] for line in forwarder_lines + app_lines]
        body.append(f"FORWARDER_ENDPOINT=tcp://127.0.0.1:{free_port()}")
        env_file.write_text("\n".join(body) + "\n")
        env = forwarder_env(tmp_path, ORDER_EVENT_MODE="KAFKA")
        del env["FORWARDER_ENDPOINT"]
        env |= {"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"}
        env |= {"KAFKA_PRODUCER_REQUEST_TIMEOUT_MS": "1000"}
        result = run_cli("check", "--env-file", str(env_file), env=env)
        [line] = [line for line in result.stdout.splitlines() if " emitter keys:" in line]
        assert line.startswith("ok")
        other = zmq.curve_keypair()[0].decode()
        env_file.write_text(env_file.read_text() + f"EMITTER_CURVE_SERVER_KEY='{other}'\n")
        result = run_cli("check", "--env-file", str(env_file), env=env)
        [line] = [line for line in result.stdout.splitlines() if " emitter keys:" in line]
        assert line.startswith("FAILED")
        assert "this forwarder's public key" in line
