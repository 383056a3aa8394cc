"""Settings are read strictly, and a refused value is named with what would have been accepted."""

from __future__ import annotations

from pathlib import Path

import pytest
import zmq
import zmq.auth

from emitter.config import (
    ConfigError,
    curve_client_keys,
    default_endpoint,
    env_bool,
    env_int,
    env_str,
    ipc_path,
    resolve_endpoint,
)

LOOPBACK_TCP = [
    "tcp://127.0.0.1:5556",
    "tcp://127.8.9.10:5556",
    "tcp://localhost:5556",
    "tcp://[::1]:5556",
]


class TestResolveEndpoint:
    def test_an_absolute_ipc_path_is_accepted(self):
        """The default transport needs no key and no permission."""
        endpoint = "ipc:///run/user/1000/openalgo-forwarder/events.sock"
        assert resolve_endpoint({"FORWARDER_ENDPOINT": endpoint}) == endpoint

    @pytest.mark.parametrize("endpoint", LOOPBACK_TCP)
    def test_loopback_tcp_needs_curve_keys(self, endpoint: str):
        """Any local user can reach a loopback port: tcp:// goes with CURVE keys."""
        with pytest.raises(ConfigError) as refused:
            resolve_endpoint({"FORWARDER_ENDPOINT": endpoint})
        assert "CURVE keys" in str(refused.value)
        assert resolve_endpoint({"FORWARDER_ENDPOINT": endpoint}, curve=True) == endpoint

    @pytest.mark.parametrize("endpoint", LOOPBACK_TCP)
    def test_insecure_tcp_is_allowed_on_loopback_only_when_asked(self, endpoint: str):
        """FORWARDER_ALLOW_INSECURE_TCP=1 takes a loopback port without keys."""
        env = {"FORWARDER_ENDPOINT": endpoint, "FORWARDER_ALLOW_INSECURE_TCP": "1"}
        assert resolve_endpoint(env) == endpoint

    def test_insecure_tcp_is_never_allowed_off_loopback(self):
        """Not even with FORWARDER_ALLOW_REMOTE=1: events never cross a network unencrypted."""
        env = {
            "FORWARDER_ENDPOINT": "tcp://10.0.0.5:5556",
            "FORWARDER_ALLOW_INSECURE_TCP": "1",
            "FORWARDER_ALLOW_REMOTE": "1",
        }
        with pytest.raises(ConfigError, match="FORWARDER_ENDPOINT"):
            resolve_endpoint(env)
        assert resolve_endpoint(env, curve=True) == env["FORWARDER_ENDPOINT"]

    def test_surrounding_spaces_are_ignored(self):
        """A value copied with stray spaces still works."""
        assert (
            resolve_endpoint({"FORWARDER_ENDPOINT": " tcp://127.0.0.1:1 "}, curve=True)
            == "tcp://127.0.0.1:1"
        )

    @pytest.mark.parametrize("endpoint", ["tcp://10.0.0.5:5556", "tcp://example.com:5556"])
    def test_remote_tcp_is_refused_unless_allowed(self, endpoint: str):
        """Events stay on the machine unless the operator explicitly allows the network."""
        with pytest.raises(ConfigError) as refused:
            resolve_endpoint({"FORWARDER_ENDPOINT": endpoint}, curve=True)
        assert refused.value.variable == "FORWARDER_ENDPOINT"
        assert "FORWARDER_ALLOW_REMOTE=1" in str(refused.value)
        allowed = {"FORWARDER_ENDPOINT": endpoint, "FORWARDER_ALLOW_REMOTE": "1"}
        assert resolve_endpoint(allowed, curve=True) == endpoint

    @pytest.mark.parametrize(
        "endpoint",
        [
            "ipc://relative/events.sock",
            "ipc://",
            "udp://127.0.0.1:5556",
            "127.0.0.1:5556",
            "tcp://127.0.0.1",
            "tcp://127.0.0.1:0",
            "tcp://127.0.0.1:65536",
            "tcp://127.0.0.1:http",
            "tcp://:5556",
        ],
    )
    def test_malformed_endpoints_are_refused_naming_variable_and_value(self, endpoint: str):
        """The message says which variable, which value, and what is accepted."""
        with pytest.raises(ConfigError) as refused:
            resolve_endpoint({"FORWARDER_ENDPOINT": endpoint})
        message = str(refused.value)
        assert message.startswith(f"FORWARDER_ENDPOINT={endpoint!r} is not valid")
        assert "ipc:///absolute/path" in message
        assert refused.value.value == endpoint

    def test_an_unset_endpoint_means_the_default(self, tmp_path: Path):
        """Without FORWARDER_ENDPOINT both sides agree on the runtime directory's socket."""
        env = {"XDG_RUNTIME_DIR": str(tmp_path)}
        assert resolve_endpoint(env) == default_endpoint(env)
        assert resolve_endpoint({**env, "FORWARDER_ENDPOINT": ""}) == default_endpoint(env)

    def test_an_unreadable_allow_remote_flag_is_refused(self):
        """A typo in the permission is an error, not a silent yes or no."""
        with pytest.raises(ConfigError) as refused:
            resolve_endpoint(
                {"FORWARDER_ENDPOINT": "tcp://127.0.0.1:1", "FORWARDER_ALLOW_REMOTE": "y"},
                curve=True,
            )
        assert refused.value.variable == "FORWARDER_ALLOW_REMOTE"


class TestCurveClientKeys:
    @pytest.fixture
    def certificate(self, tmp_path: Path) -> tuple[Path, bytes]:
        public_file, secret_file = zmq.auth.create_certificates(str(tmp_path), "app")
        return Path(secret_file), zmq.auth.load_certificate(public_file)[0]

    def test_none_when_neither_is_set(self):
        """ipc needs no keys: an empty environment gives none."""
        assert curve_client_keys({"EMITTER_CURVE_SERVER_KEY": ""}) is None

    def test_the_keys_come_from_the_certificate_and_the_server_key(self, certificate):
        """What keygen printed for this emitter is all it needs; the secret stays out of repr."""
        secret_file, public = certificate
        server = zmq.curve_keypair()[0].decode()
        keys = curve_client_keys(
            {"EMITTER_CURVE_SECRET_KEY_FILE": str(secret_file), "EMITTER_CURVE_SERVER_KEY": server}
        )
        assert keys is not None
        assert (keys.public, keys.server) == (public, server.encode())
        assert keys.secret.decode() not in repr(keys)

    @pytest.mark.parametrize(
        ("env", "variable"),
        [
            ({"EMITTER_CURVE_SERVER_KEY": "x" * 40}, "EMITTER_CURVE_SECRET_KEY_FILE"),
            ({"EMITTER_CURVE_SECRET_KEY_FILE": "/x"}, "EMITTER_CURVE_SERVER_KEY"),
            (
                {"EMITTER_CURVE_SECRET_KEY_FILE": "/no/such", "EMITTER_CURVE_SERVER_KEY": "k"},
                "EMITTER_CURVE_SECRET_KEY_FILE",
            ),
        ],
    )
    def test_half_a_configuration_is_refused_naming_what_is_missing(self, env, variable):
        with pytest.raises(ConfigError) as refused:
            curve_client_keys(env)
        assert refused.value.variable == variable

    @pytest.mark.parametrize("server", ["short", "é" * 40, "#" * 40])
    def test_a_server_key_that_is_no_z85_key_is_refused(self, certificate, server):
        env = {
            "EMITTER_CURVE_SECRET_KEY_FILE": str(certificate[0]),
            "EMITTER_CURVE_SERVER_KEY": server,
        }
        with pytest.raises(ConfigError, match="40 Z85 characters"):
            curve_client_keys(env)


class TestDefaultEndpoint:
    def test_it_lives_in_the_users_runtime_directory(self, tmp_path: Path):
        """The socket is private to the user, never a guessable path in /tmp."""
        endpoint = default_endpoint({"XDG_RUNTIME_DIR": str(tmp_path)})
        assert endpoint == f"ipc://{tmp_path}/openalgo-forwarder/events.sock"

    def test_without_a_runtime_directory_it_falls_back_to_the_home(self):
        """Systems without XDG_RUNTIME_DIR use ~/.local/run."""
        endpoint = default_endpoint({})
        assert endpoint == f"ipc://{Path.home()}/.local/run/openalgo-forwarder/events.sock"


class TestEnvInt:
    def test_unset_or_blank_means_the_default(self):
        """Leaving a number out, or empty, keeps its default."""
        assert env_int({}, "N", 7) == 7
        assert env_int({"N": "  "}, "N", 7) == 7

    def test_a_number_is_read(self):
        """Spaces around the number are tolerated."""
        assert env_int({"N": " 42 "}, "N", 7) == 42

    @pytest.mark.parametrize(
        ("raw", "minimum", "accepted"),
        [
            ("abc", 0, "an integer >= 0"),
            ("1.5", 0, "an integer >= 0"),
            ("0", 1, "a positive integer"),
            ("-3", 0, "an integer >= 0"),
        ],
    )
    def test_a_bad_number_names_variable_value_and_accepted(
        self, raw: str, minimum: int, accepted: str
    ):
        """The error message quotes the value as given and the accepted range."""
        with pytest.raises(ConfigError) as refused:
            env_int({"EMITTER_SNDHWM": raw}, "EMITTER_SNDHWM", 10000, minimum=minimum)
        assert str(refused.value) == f"EMITTER_SNDHWM={raw!r} is not valid: expected {accepted}"


class TestEnvBool:
    @pytest.mark.parametrize(
        ("raw", "value"),
        [
            ("1", True),
            ("TRUE", True),
            (" yes ", True),
            ("on", True),
            ("0", False),
            ("off", False),
        ],
    )
    def test_the_usual_spellings_are_understood(self, raw: str, value: bool):
        """Operators write yes/no in many ways; all common ones work."""
        assert env_bool({"B": raw}, "B", default=not value) is value

    @pytest.mark.parametrize("env", [{}, {"B": ""}, {"B": "  "}])
    def test_unset_or_empty_means_the_default(self, env):
        """An absent flag, or `B=` in an env file, keeps its default."""
        assert env_bool(env, "B", default=True) is True
        assert env_bool(env, "B", default=False) is False

    def test_anything_else_is_refused(self):
        """A value that is neither yes nor no is an error naming the choices."""
        with pytest.raises(ConfigError) as refused:
            env_bool({"B": "maybe"}, "B", default=False)
        assert "one of 1, 0, true, false" in str(refused.value)


class TestEnvStr:
    def test_empty_means_the_default(self):
        """`S=` in an env file leaves the default."""
        assert env_str({"S": "  "}, "S", "fallback") == "fallback"

    def test_no_value_at_all_is_refused_unless_allowed(self):
        """A required text setting without a default cannot be blank."""
        with pytest.raises(ConfigError):
            env_str({"S": "  "}, "S", "")
        assert env_str({"S": "  "}, "S", "", allow_empty=True) == ""


class TestIpcPath:
    def test_only_ipc_endpoints_have_a_path(self):
        """The forwarder secures the socket file of an ipc endpoint, and only that."""
        assert ipc_path("ipc:///run/x/events.sock") == Path("/run/x/events.sock")
        assert ipc_path("tcp://127.0.0.1:1") is None
