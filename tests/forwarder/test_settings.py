"""Settings: defaults, and every unusable value refused with the variable named."""

from __future__ import annotations

import grp
import os
import subprocess
import sys
from pathlib import Path

import pytest

from emitter.config import MODES, ConfigError
from forwarder.envfile import read_env_file
from forwarder.settings import MetricsSettings, Settings
from forwarder.sinks.table import SINKS

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = read_env_file(ROOT / ".sample.env").values

SECRET = "relay-secret-0123456789"
KAFKA = {"ORDER_EVENT_MODE": "KAFKA"}
SOCKETIO = {"ORDER_EVENT_MODE": "SOCKETIO", "SOCKETIO_RELAY_SECRET": SECRET}


class TestDefaults:
    def test_the_seeds_defaults_apply_when_nothing_is_set(self, tmp_path):
        """An env with only the relay secret gives the documented configuration."""
        settings = Settings.from_env({**SOCKETIO, "XDG_RUNTIME_DIR": str(tmp_path)})
        assert settings.modes == ("SOCKETIO",)
        assert settings.endpoint == f"ipc://{tmp_path}/openalgo-forwarder/events.sock"
        assert (settings.batch_max, settings.batch_linger_ms, settings.queue_max) == (
            5000,
            5,
            100_000,
        )
        assert (settings.retry_base_ms, settings.retry_max_ms) == (100, 30_000)
        assert (settings.shutdown_timeout_s, settings.stats_interval_s) == (10, 60)
        assert settings.sinks.get("KAFKA") is None
        assert settings.sinks.get("SOCKETIO") is not None

    def test_both_modes_build_both_sink_sections(self):
        """SOCKETIO,KAFKA turns on both sinks, in a fixed order whatever the spelling."""
        settings = Settings.from_env({**SOCKETIO, "ORDER_EVENT_MODE": "kafka, socketio"})
        assert settings.modes == ("SOCKETIO", "KAFKA")
        assert settings.sinks.get("KAFKA") is not None
        assert settings.sinks.get("KAFKA").topic == "from_openalgo_order_events"
        assert settings.sinks.get("KAFKA").compression == "snappy"
        assert settings.sinks.get("KAFKA").client == "kafka-python"

    def test_systemd_state_directory_is_the_default_state_dir(self):
        """Under systemd StateDirectory= is used without any setting."""
        settings = Settings.from_env({**KAFKA, "STATE_DIRECTORY": "/var/lib/openalgo-forwarder"})
        assert settings.state_dir == Path("/var/lib/openalgo-forwarder")

    def test_under_systemd_the_socket_is_in_the_runtime_directory(self, tmp_path):
        """RuntimeDirectory= gives RUNTIME_DIRECTORY: an empty FORWARDER_ENDPOINT means the
        socket there, so the unit needs no Environment= line an env file could override."""
        env = {**KAFKA, "FORWARDER_ENDPOINT": "", "RUNTIME_DIRECTORY": str(tmp_path / "run")}
        assert Settings.from_env(env).endpoint == f"ipc://{tmp_path}/run/events.sock"
        explicit = {**env, "FORWARDER_ENDPOINT": "ipc:///elsewhere/events.sock"}
        assert Settings.from_env(explicit).endpoint == "ipc:///elsewhere/events.sock"

    def test_under_systemd_the_socket_group_is_the_runtime_directorys(self, tmp_path):
        """The unit's Group= owns the runtime directory (RuntimeDirectoryMode=0750): with
        FORWARDER_SOCKET_GROUP empty, that group gets the socket; a 0700 directory keeps it
        private; a group named in the settings wins."""
        runtime = tmp_path / "run"
        runtime.mkdir(mode=0o750)
        runtime.chmod(0o750)
        env = {**KAFKA, "RUNTIME_DIRECTORY": str(runtime), "FORWARDER_SOCKET_GROUP": ""}
        own_group = grp.getgrgid(os.getgid()).gr_name
        assert Settings.from_env(env).socket_group == own_group
        runtime.chmod(0o700)
        assert Settings.from_env(env).socket_group is None
        named = {**env, "FORWARDER_SOCKET_GROUP": "some-group"}
        assert Settings.from_env(named).socket_group == "some-group"

    def test_secrets_stay_out_of_the_repr(self):
        """A settings object printed in a log or traceback reveals no secret."""
        settings = Settings.from_env(
            {
                **SOCKETIO,
                "ORDER_EVENT_MODE": "SOCKETIO,KAFKA",
                "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                "KAFKA_SASL_USERNAME": "trader",
                "KAFKA_SASL_PASSWORD": "sasl-password-value",
            }
        )
        assert settings.sinks.get("KAFKA") is not None
        assert settings.sinks.get("KAFKA").sasl_password == "sasl-password-value"
        assert "sasl-password-value" not in repr(settings)
        assert SECRET not in repr(settings)


class TestEmptyMeansDefault:
    @pytest.mark.parametrize("name", sorted(SAMPLE))
    def test_an_empty_value_is_the_same_as_no_value(self, name):
        """`NAME=` in an env file leaves the default, for every setting .sample.env lists."""
        base = {"ORDER_EVENT_MODE": "SOCKETIO,KAFKA", "SOCKETIO_RELAY_SECRET": SECRET}
        absent = {key: value for key, value in base.items() if key != name}
        assert Settings.from_env(base | {name: ""}) == Settings.from_env(absent)

    def test_the_shipped_sample_loads_as_it_stands(self):
        """.sample.env, read as systemd reads it, is a valid configuration without an edit."""
        settings = Settings.from_env(SAMPLE)
        assert settings == Settings.from_env({})
        assert settings.sinks.get("SOCKETIO") is not None
        assert settings.sinks.get("SOCKETIO").relay_secret == ""

    def test_the_relay_secret_may_be_left_empty_but_not_short(self):
        """Empty waits for the operator (the sink holds events); a short one is a mistake."""
        assert Settings.from_env({"SOCKETIO_RELAY_SECRET": ""}).sinks.get("SOCKETIO") is not None
        with pytest.raises(ConfigError, match="SOCKETIO_RELAY_SECRET"):
            Settings.from_env({"SOCKETIO_RELAY_SECRET": "x"})


INVALID = [
    ({"ORDER_EVENT_MODE": "REDIS"}, "ORDER_EVENT_MODE", "REDIS"),
    ({"ORDER_EVENT_MODE": "KAFKA,KAFKA"}, "ORDER_EVENT_MODE", "KAFKA,KAFKA"),
    ({**KAFKA, "FORWARDER_BATCH_MAX": "0"}, "FORWARDER_BATCH_MAX", "0"),
    ({**KAFKA, "FORWARDER_BATCH_MAX": "abc"}, "FORWARDER_BATCH_MAX", "abc"),
    ({**KAFKA, "FORWARDER_BATCH_LINGER_MS": "-1"}, "FORWARDER_BATCH_LINGER_MS", "-1"),
    ({**KAFKA, "FORWARDER_INFLIGHT_BATCHES": "0"}, "FORWARDER_INFLIGHT_BATCHES", "0"),
    ({**KAFKA, "FORWARDER_QUEUE_MAX": "0"}, "FORWARDER_QUEUE_MAX", "0"),
    ({**KAFKA, "FORWARDER_RETRY_BASE_MS": "0"}, "FORWARDER_RETRY_BASE_MS", "0"),
    (
        {**KAFKA, "FORWARDER_RETRY_BASE_MS": "500", "FORWARDER_RETRY_MAX_MS": "100"},
        "FORWARDER_RETRY_MAX_MS",
        100,
    ),
    ({**KAFKA, "FORWARDER_SHUTDOWN_TIMEOUT_S": "soon"}, "FORWARDER_SHUTDOWN_TIMEOUT_S", "soon"),
    ({**KAFKA, "FORWARDER_STATS_INTERVAL_S": "-5"}, "FORWARDER_STATS_INTERVAL_S", "-5"),
    ({**KAFKA, "FORWARDER_ENDPOINT": "tcp://10.1.2.3:5556"}, "FORWARDER_ENDPOINT", None),
    ({**KAFKA, "FORWARDER_ENDPOINT": "ipc://relative/path"}, "FORWARDER_ENDPOINT", None),
    ({**KAFKA, "LOG_LEVEL": "TRACE"}, "LOG_LEVEL", "TRACE"),
    ({**KAFKA, "LOG_FORMAT": "xml"}, "LOG_FORMAT", "xml"),
    ({**KAFKA, "KAFKA_PRODUCER_COMPRESSION": "brotli"}, "KAFKA_PRODUCER_COMPRESSION", "brotli"),
    ({**KAFKA, "KAFKA_PRODUCER_ACKS": "2"}, "KAFKA_PRODUCER_ACKS", "2"),
    ({**KAFKA, "KAFKA_CLIENT": "librdkafka"}, "KAFKA_CLIENT", "librdkafka"),
    ({**KAFKA, "KAFKA_BOOTSTRAP_SERVERS": "broker-without-port"}, "KAFKA_BOOTSTRAP_SERVERS", None),
    ({**KAFKA, "KAFKA_SECURITY_PROTOCOL": "TLS"}, "KAFKA_SECURITY_PROTOCOL", "TLS"),
    (
        {**KAFKA, "KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_USERNAME": "u"},
        "KAFKA_SASL_PASSWORD",
        "",
    ),
    (
        {**KAFKA, "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_MECHANISM": "GSSAPI"},
        "KAFKA_SASL_MECHANISM",
        "GSSAPI",
    ),
    ({**KAFKA, "KAFKA_SSL_CAFILE": "/no/such/ca.pem"}, "KAFKA_SSL_CAFILE", "/no/such/ca.pem"),
    ({**SOCKETIO, "SOCKETIO_RELAY_SECRET": "short"}, "SOCKETIO_RELAY_SECRET", "<hidden>"),
    ({**SOCKETIO, "SOCKETIO_URL": "ftp://127.0.0.1"}, "SOCKETIO_URL", "ftp://127.0.0.1"),
    ({**SOCKETIO, "SOCKETIO_URL": "unix:app.sock"}, "SOCKETIO_URL", "unix:app.sock"),
    ({**SOCKETIO, "SOCKETIO_CA_FILE": "/no/such/ca.pem"}, "SOCKETIO_CA_FILE", "/no/such/ca.pem"),
    ({**SOCKETIO, "SOCKETIO_NAMESPACE": "/"}, "SOCKETIO_NAMESPACE", "/"),
    ({**SOCKETIO, "SOCKETIO_ACK_TIMEOUT_S": "0"}, "SOCKETIO_ACK_TIMEOUT_S", "0"),
]


class TestInvalid:
    @pytest.mark.parametrize(("env", "variable", "value"), INVALID)
    def test_an_unusable_value_names_the_variable_the_value_and_the_choices(
        self, env, variable, value
    ):
        """The message alone tells the operator what to change and to what."""
        with pytest.raises(ConfigError) as caught:
            Settings.from_env(env)
        error = caught.value
        assert error.variable == variable
        if value is not None:
            assert error.value == value
        assert str(error).startswith(f"{variable}=")
        assert "expected" in str(error)

    def test_tcp_without_curve_is_refused_unless_insecure_loopback_is_allowed(self):
        """tcp:// means CURVE; FORWARDER_ALLOW_INSECURE_TCP=1 allows a loopback port without it."""
        tcp = {**KAFKA, "FORWARDER_ENDPOINT": "tcp://127.0.0.1:5556"}
        with pytest.raises(ConfigError, match="CURVE keys"):
            Settings.from_env(tcp)
        assert Settings.from_env({**tcp, "FORWARDER_ALLOW_INSECURE_TCP": "1"}).curve is None

    def test_a_ca_file_for_a_plain_http_url_is_refused(self, tmp_path):
        """A CA file can only mean an https URL: say so rather than ignore it."""
        ca = tmp_path / "ca.pem"
        ca.write_text("x")
        with pytest.raises(ConfigError, match="SOCKETIO_URL is https://"):
            Settings.from_env({**SOCKETIO, "SOCKETIO_CA_FILE": str(ca)})

    def test_a_unix_socket_url_names_the_socket(self):
        """gunicorn's --bind unix:PATH form is accepted as it is written."""
        env = {**SOCKETIO, "SOCKETIO_URL": "unix:/var/python/openalgo/openalgo.sock"}
        socketio = Settings.from_env(env).sinks.get("SOCKETIO")
        assert socketio is not None
        assert socketio.unix_socket == "/var/python/openalgo/openalgo.sock"

    def test_a_short_relay_secret_is_not_echoed(self):
        """Even a wrong secret is a secret."""
        with pytest.raises(ConfigError) as caught:
            Settings.from_env({**SOCKETIO, "SOCKETIO_RELAY_SECRET": "almost-a-secret"})
        assert "almost-a-secret" not in str(caught.value)


class TestKafkaClient:
    @pytest.mark.parametrize(
        ("value", "client"), [("kafka-python", "kafka-python"), (" Confluent ", "confluent")]
    )
    def test_either_library_is_chosen_by_name(self, value, client):
        """KAFKA_CLIENT takes the accepted names in any case, as the other choices do."""
        settings = Settings.from_env({**KAFKA, "KAFKA_CLIENT": value})

        assert settings.sinks.get("KAFKA") is not None
        assert settings.sinks.get("KAFKA").client == client

    def test_confluent_without_its_library_stops_the_start_naming_the_install(self, monkeypatch):
        """Choosing confluent where confluent-kafka is missing is a setting error, not a crash."""
        monkeypatch.setitem(sys.modules, "confluent_kafka", None)

        with pytest.raises(ConfigError) as caught:
            Settings.from_env({**KAFKA, "KAFKA_CLIENT": "confluent"})

        assert caught.value.variable == "KAFKA_CLIENT"
        assert caught.value.value == "confluent"
        assert "pip install 'openalgo-forwarder[forwarder,confluent]'" in str(caught.value)


class TestMetricsSettings:
    @pytest.mark.parametrize(
        "env", [{}, {"FORWARDER_METRICS_ADDR": ""}, {"FORWARDER_METRICS_ADDR": " "}]
    )
    def test_empty_is_off(self, env):
        """No address means no metrics server."""
        assert MetricsSettings.from_env(env) is None

    @pytest.mark.parametrize(
        ("raw", "expected"),
        [
            ("127.0.0.1:9464", ("127.0.0.1", 9464)),
            ("127.0.0.2:9464", ("127.0.0.2", 9464)),
            ("localhost:9100", ("localhost", 9100)),
            ("[::1]:9464", ("::1", 9464)),
        ],
    )
    def test_loopback(self, raw, expected):
        """Loopback addresses, IPv6 in brackets, are accepted as they are."""
        assert MetricsSettings.from_env({"FORWARDER_METRICS_ADDR": raw}) == MetricsSettings(
            *expected
        )

    @pytest.mark.parametrize(
        "raw", ["0.0.0.0:9464", "10.1.2.3:9464", "[::]:9464", "example.com:80"]
    )
    def test_remote_refused(self, raw):
        """An address other machines could reach needs FORWARDER_METRICS_ALLOW_REMOTE=1."""
        with pytest.raises(ConfigError) as caught:
            MetricsSettings.from_env({"FORWARDER_METRICS_ADDR": raw})
        assert caught.value.variable == "FORWARDER_METRICS_ADDR"
        assert "FORWARDER_METRICS_ALLOW_REMOTE=1" in str(caught.value)

    def test_remote_allowed(self):
        """With the opt-in, any host is served."""
        env = {"FORWARDER_METRICS_ADDR": "0.0.0.0:9464", "FORWARDER_METRICS_ALLOW_REMOTE": "1"}
        assert MetricsSettings.from_env(env) == MetricsSettings("0.0.0.0", 9464)

    @pytest.mark.parametrize(
        "raw",
        ["9464", ":9464", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:x", "::1:9464"],
    )
    def test_malformed(self, raw):
        """A value that is not HOST:PORT with a usable port is refused, even with the opt-in."""
        env = {"FORWARDER_METRICS_ADDR": raw, "FORWARDER_METRICS_ALLOW_REMOTE": "1"}
        with pytest.raises(ConfigError) as caught:
            MetricsSettings.from_env(env)
        assert caught.value.value == raw


class TestSinkTable:
    def test_every_mode_has_one_row(self):
        """ORDER_EVENT_MODE's names and the sink table's rows are the same set."""
        assert set(SINKS) == set(MODES)

    def test_sinks_are_read_in_the_table_s_order(self):
        """`check`, `stats` and the metrics list the sinks in one order, whatever the mode says."""
        env = {**SOCKETIO, "ORDER_EVENT_MODE": "SOCKETIO,KAFKA"}
        assert list(Settings.from_env(env).sinks) == list(SINKS)

    def test_reading_settings_loads_no_server_or_client_library(self):
        """Settings stay cheap: no prometheus, no http.server, no Kafka or Socket.IO client."""
        code = (
            "import sys, forwarder.settings\n"
            "heavy = ('prometheus_client', 'http.server', 'kafka', 'confluent_kafka', 'socketio')\n"
            "print(','.join(name for name in heavy if name in sys.modules))"
        )
        loaded = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.strip()
        assert loaded == ""
