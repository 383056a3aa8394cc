"""Logging set-up: JSON lines off a terminal, console colour on one, levels, and the throttle."""

from __future__ import annotations

import io
import json
import logging
import os
import re
from datetime import datetime

import pytest
import structlog
import zmq.auth

from emitter.publisher import publisher_from_env
from forwarder.curve import keygen
from forwarder.log_setup import REDACTED, WIRE_LOGGERS, Redactor, configure
from forwarder.sinks.kafka import KafkaSink
from harness.broker import KafkaBroker, unique_topic
from harness.forwarder import ForwarderProcess, forwarder_env
from harness.net import free_port
from harness.relay_app import RelayServer
from harness.waits import wait_until
from tests.support.sasl import SASL_AUTHENTICATE, sasl_proxy


@pytest.fixture(autouse=True)
def restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        structlog.reset_defaults()
        root.handlers[:] = handlers
        root.setLevel(level)
        for name in ("kafka", "socketio", "engineio", "urllib3", "websocket", *WIRE_LOGGERS):
            logging.getLogger(name).setLevel(logging.NOTSET)


def json_lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


class TestConfigure:
    def test_auto_writes_json_lines_with_iso_utc_timestamps_off_a_terminal(self):
        """Under systemd stdout is no terminal: each event becomes one parseable JSON line."""
        stream = io.StringIO()
        configure(logging.INFO, "auto", stream)
        structlog.get_logger().info("batch_delivered", sink="kafka", count=3)
        [line] = json_lines(stream)
        assert line["event"] == "batch_delivered"
        assert line["level"] == "info"
        assert (line["sink"], line["count"]) == ("kafka", 3)
        assert line["timestamp"].endswith("Z")
        assert datetime.fromisoformat(line["timestamp"]).utcoffset().total_seconds() == 0

    def test_events_below_the_level_are_dropped(self):
        """LOG_LEVEL=WARNING keeps the per-batch info lines out of the journal."""
        stream = io.StringIO()
        configure(logging.WARNING, "json", stream)
        log = structlog.get_logger()
        log.info("batch_delivered")
        log.warning("sink_retry")
        assert [line["event"] for line in json_lines(stream)] == ["sink_retry"]

    def test_an_exception_is_rendered_into_the_json_line(self):
        """A traceback stays inside its one JSON line, so journald keeps it together."""
        stream = io.StringIO()
        configure(logging.INFO, "json", stream)
        try:
            raise RuntimeError("sink exploded")
        except RuntimeError:
            structlog.get_logger().exception("sink_failed", sink="memory")
        [line] = json_lines(stream)
        assert "RuntimeError: sink exploded" in line["exception"]
        assert "Traceback" in line["exception"]

    def test_standard_library_logging_goes_through_the_same_renderer(self):
        """Other code logging with logging gets JSON lines too."""
        stream = io.StringIO()
        configure(logging.INFO, "json", stream)
        logging.getLogger("forwarder.plugin").warning("disk at %d%%", 91)
        logging.getLogger("forwarder.plugin").debug("details")
        [line] = json_lines(stream)
        assert line["event"] == "disk at 91%"
        assert line["logger"] == "forwarder.plugin"
        assert line["level"] == "warning"

    def test_client_library_connection_noise_shows_only_at_debug(self):
        """kafka-python logs each failed connect; sink_retry already reports it once per attempt."""
        quiet, verbose = io.StringIO(), io.StringIO()
        configure(logging.INFO, "json", quiet, quiet=KafkaSink.noisy_libraries)
        logging.getLogger("kafka.net.manager").error("Connection failed: ECONNREFUSED")
        configure(logging.DEBUG, "json", verbose, quiet=KafkaSink.noisy_libraries)
        logging.getLogger("kafka.net.manager").error("Connection failed: ECONNREFUSED")
        assert json_lines(quiet) == []
        assert [line["logger"] for line in json_lines(verbose)] == ["kafka.net.manager"]

    def test_console_format_on_a_terminal_is_key_value_text(self):
        """On a terminal people read colour and key=value, not JSON."""
        primary, secondary = os.openpty()
        with open(primary, "rb", buffering=0) as reader, open(secondary, "w") as terminal:
            configure(logging.INFO, "auto", terminal)
            structlog.get_logger().info("forwarder_started", pid=42)
            terminal.flush()
            text = reader.read(4096).decode()
        assert "forwarder_started" in text
        assert "pid" in text
        assert "42" in text
        assert "\x1b[" in text
        assert not text.lstrip().startswith("{")

    def test_console_format_can_be_forced_off_a_terminal(self):
        """LOG_FORMAT=console is honoured even when output is piped."""
        stream = io.StringIO()
        configure(logging.INFO, "console", stream)
        structlog.get_logger().info("stats", received=5)
        assert "received=5" in re.sub(r"\x1b\[[0-9;]*m", "", stream.getvalue())
        with pytest.raises(json.JSONDecodeError):
            json.loads(stream.getvalue())


SECRET = "pa$$-wörd\\'\"-0123"


class TestNoSecret:
    def test_wire_loggers_stay_quiet_at_debug_unless_log_wire(self):
        """kafka-python prints SaslAuthenticateRequest(auth_bytes=...) at DEBUG: that logger
        stays at WARNING with LOG_LEVEL=DEBUG alone, and speaks only with LOG_WIRE=1."""
        quiet, wire = io.StringIO(), io.StringIO()
        configure(logging.DEBUG, "json", quiet)
        logging.getLogger("kafka.protocol.parser").debug("Sending request SaslAuthenticate")
        logging.getLogger("kafka.net.manager").debug("connecting")
        configure(logging.DEBUG, "json", wire, wire=True)
        logging.getLogger("kafka.protocol.parser").debug("Sending request SaslAuthenticate")
        assert [line["logger"] for line in json_lines(quiet)] == ["kafka.net.manager"]
        assert [line["logger"] for line in json_lines(wire)] == ["kafka.protocol.parser"]

    @pytest.mark.parametrize("log_format", ["json", "console"])
    def test_a_secret_is_redacted_from_structlog_and_standard_library_lines(self, log_format):
        """As written, as a repr or bytes repr shows it, as JSON escapes it: all replaced."""
        stream = io.StringIO()
        configure(logging.DEBUG, log_format, stream, secrets=[SECRET], wire=True)
        structlog.get_logger().info("connect", password=SECRET, note=f"auth {SECRET!r}")
        logging.getLogger("kafka.protocol.parser").debug(
            "SaslAuthenticateRequest(auth_bytes=%r)", b"user\x00user\x00" + SECRET.encode()
        )
        try:
            raise ValueError(f"refused {SECRET}")
        except ValueError:
            structlog.get_logger().exception("failed")
        text = stream.getvalue()
        assert text.count(REDACTED) >= 4
        for form in Redactor([SECRET]).forms:  # every escaped form it knows
            assert form not in text
        assert "pa$$" not in text

    def test_short_values_are_not_redacted(self):
        """Replacing a 3-character value everywhere would garble the log, not protect it."""
        assert Redactor(["abc"])("abc abc") == "abc abc"
        assert Redactor(["abcdef"])("x abcdef y") == f"x {REDACTED} y"


SASL_PASSWORD = "sasl-Pa$$w0rd-7f3e9c"
RELAY_SECRET = "relay-secret-4b1d-8e2a-c0ffee"


@pytest.mark.integration
class TestNoSecretInTheDaemon:
    @pytest.mark.parametrize(
        ("kafka_client", "wire"),
        [("kafka-python", False), ("kafka-python", True), ("confluent", True)],
    )
    def test_no_line_at_debug_holds_a_secret(self, tmp_path, forwarders, kafka_client, wire):
        """At LOG_LEVEL=DEBUG, through a SASL handshake that sends the password, a relay
        connection that presents its secret and a CURVE handshake, no line the forwarder prints
        holds the SASL password, the relay secret or a CURVE secret key. With LOG_WIRE=1 the
        wire loggers do print the SaslAuthenticate request, redacted."""
        keys = tmp_path / "keys"
        keygen(keys, ["app"])
        server_public, server_secret = zmq.auth.load_certificate(keys / "forwarder.key_secret")
        _, app_secret = zmq.auth.load_certificate(keys / "app.key_secret")
        assert server_secret is not None
        assert app_secret is not None
        endpoint = f"tcp://127.0.0.1:{free_port()}"
        with (
            KafkaBroker() as broker,
            sasl_proxy(broker.port) as proxy,
            RelayServer(RELAY_SECRET, tmp_path / "relay.log") as relay,
        ):
            env = forwarder_env(
                tmp_path,
                LOG_LEVEL="DEBUG",
                LOG_WIRE="1" if wire else "0",
                ORDER_EVENT_MODE="SOCKETIO,KAFKA",
                KAFKA_CLIENT=kafka_client,
                KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{proxy.port}",
                KAFKA_ORDER_EVENTS_TOPIC=unique_topic(),
                KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT",
                KAFKA_SASL_USERNAME="trader",
                KAFKA_SASL_PASSWORD=SASL_PASSWORD,
                SOCKETIO_URL=relay.url,
                SOCKETIO_RELAY_SECRET=RELAY_SECRET,
                FORWARDER_ENDPOINT=endpoint,
                FORWARDER_CURVE_SECRET_KEY_FILE=str(keys / "forwarder.key_secret"),
                FORWARDER_CURVE_CLIENTS_FILE=str(keys / "clients"),
            )
            process = ForwarderProcess(env)
            forwarders.append(process)
            process.start()
            publisher = publisher_from_env(
                {
                    "FORWARDER_ENDPOINT": endpoint,
                    "EMITTER_CURVE_SECRET_KEY_FILE": str(keys / "app.key_secret"),
                    "EMITTER_CURVE_SERVER_KEY": server_public.decode(),
                }
            )
            assert publisher.publish_order_event("alice", "SBIN-EQ", "BUY", "ORD1", "live")
            publisher.close()
            process.wait_for_log("batch_delivered", timeout=60, sink="socketio")
            wait_until(lambda: SASL_AUTHENTICATE in proxy.api_keys, what="the SASL password sent")
            process.stop()
        output = process.output()
        assert output.count("\n") > 50  # DEBUG really was on
        secrets = [SASL_PASSWORD, RELAY_SECRET, server_secret.decode(), app_secret.decode()]
        for line in output.splitlines():
            for secret in secrets:
                assert secret not in line
                assert repr(secret.encode())[2:-1] not in line
        sasl_lines = [line for line in output.splitlines() if "SaslAuthenticateRequest" in line]
        if wire and kafka_client == "kafka-python":
            assert sasl_lines
            assert all(REDACTED in line for line in sasl_lines)
        elif not wire:
            assert sasl_lines == []
