"""The relay namespace on python-socketio's Server and on Flask-SocketIO as OpenAlgo runs it."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import socketio

from emitter.contract import RELAY_BATCH_EVENT, RELAY_LIMITS_EVENT, RELAY_NAMESPACE
from emitter.relay import install_relay
from harness.browser import browser_tab
from harness.relay_app import RelayServer
from harness.waits import wait_until
from tests.support.browser_events import BROWSER_EVENTS
from tests.support.plain_server import plain_server

SECRET = "relay-secret-for-tests-0123456789"
WRONG = "not-the-relay-secret-9876543210"
ITEMS = [[event, payload, user] for event, payload, user in BROWSER_EVENTS]
EXPECTED = [(event, payload) for event, payload, _ in BROWSER_EVENTS]
MARKER = ["order_notification", {"symbol": "-", "status": "info", "message": "marker"}, None]
EXPECTED_BOB = [
    *((event, payload) for event, payload, user in BROWSER_EVENTS if user in ("bob", None)),
    (MARKER[0], MARKER[1]),
]


def connect_relay(url: str, auth: Any) -> socketio.Client:
    """A forwarder-like client on the relay namespace; raises ConnectionError when refused."""
    client = socketio.Client(reconnection=False, handle_sigint=False)
    client.connect(
        url,
        auth=auth,
        namespaces=[RELAY_NAMESPACE],
        transports=["websocket"],
        wait_timeout=30,
    )
    return client


@contextlib.contextmanager
def relay_client(url: str) -> Iterator[socketio.Client]:
    """A client admitted with the secret, disconnected however the test ends."""
    client = connect_relay(url, {"secret": SECRET})
    try:
        yield client
    finally:
        client.disconnect()


def relay(client: socketio.Client, items: Any) -> Any:
    return client.call(RELAY_BATCH_EVENT, items, namespace=RELAY_NAMESPACE, timeout=30)


def with_user_rooms(sio: socketio.Server) -> None:
    """Put each browser into a room named after the user it says it is, as an app would."""

    @sio.on("connect")
    def join(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        if isinstance(auth, dict) and "user" in auth:
            sio.enter_room(sid, auth["user"])


@pytest.fixture
def plain_url() -> Iterator[str]:
    with plain_server(lambda sio: install_relay(sio, SECRET)) as url:
        yield url


class TestInstallRelayArguments:
    @pytest.mark.parametrize("secret", ["", "fifteen-chars!!"])
    def test_refuses_a_short_secret_without_repeating_it(self, secret):
        """A secret under 16 characters stops app start-up, and the error does not show it."""
        with pytest.raises(ValueError, match="at least 16 characters") as caught:
            install_relay(socketio.Server(async_mode="threading"), secret)
        assert not secret or secret not in str(caught.value)

    def test_refuses_the_browsers_namespace(self):
        """Installing the relay on `/` would lock every browser out, so it is refused."""
        with pytest.raises(ValueError, match="must differ"):
            install_relay(socketio.Server(async_mode="threading"), SECRET, namespace="/")


@pytest.mark.integration
class TestRelayOnPlainServer:
    def test_relays_every_browser_event_in_order_and_acknowledges_the_count(self, plain_url):
        """Each item reaches the browsers under its own name with its payload, in order."""
        with browser_tab(plain_url) as browser, relay_client(plain_url) as client:
            assert relay(client, ITEMS) == len(ITEMS)
            received = browser.wait_for(len(ITEMS))
        assert json.dumps(received) == json.dumps(EXPECTED)

    @pytest.mark.parametrize(
        "auth",
        [
            {"secret": WRONG},
            {"secret": SECRET[:-1]},
            {},
            {"secret": 1234567890123456},
            {"secret": "\ud800" * 20},
            "a string instead of a dict",
        ],
        ids=["wrong", "prefix", "missing", "number", "lone-surrogate", "not-a-dict"],
    )
    def test_refuses_a_client_without_the_secret_and_logs_no_secret(self, plain_url, caplog, auth):
        """A refused client relays nothing; the warning names the client, never a secret."""
        caplog.set_level(logging.INFO, logger="emitter.relay")
        with browser_tab(plain_url) as browser:
            with pytest.raises(socketio.exceptions.ConnectionError):
                connect_relay(plain_url, auth)
            with relay_client(plain_url) as client:
                assert relay(client, [MARKER]) == 1
            received = browser.wait_for(1)
        assert received == [(MARKER[0], MARKER[1])]
        refusals = [r for r in caplog.records if "refused" in r.getMessage()]
        assert [r.levelname for r in refusals] == ["WARNING"]
        assert "127.0.0.1" in refusals[0].getMessage()
        assert SECRET not in caplog.text
        assert WRONG not in caplog.text

    def test_skips_malformed_items_and_acknowledges_only_what_it_emitted(self, plain_url, caplog):
        """Malformed items are counted and skipped; the well-formed ones still go out in order."""
        first, second = ITEMS[0], ITEMS[3]
        batch = [
            first,
            "not a list",
            [1, {}, None],
            ["", {}, None],
            ["order_event", "not a dict", None],
            ["order_event", {}, 42],
            ["order_event", {}],
            ["disconnect", {}, None],
            second,
        ]
        with browser_tab(plain_url) as browser, relay_client(plain_url) as client:
            assert relay(client, batch) == 2
            assert relay(client, [MARKER]) == 1
            received = browser.wait_for(3)
        assert received == [(first[0], first[1]), (second[0], second[1]), (MARKER[0], MARKER[1])]
        assert "7 of 9 items not emitted" in caplog.text

    @pytest.mark.parametrize("data", [{"not": "a list"}, "text", None, ("two", "arguments")])
    def test_answers_zero_to_a_batch_that_is_not_one_list(self, plain_url, data):
        """A malformed batch is acknowledged with 0 and the server keeps relaying."""
        with relay_client(plain_url) as client:
            assert relay(client, data) == 0
            assert relay(client, [MARKER]) == 1

    def test_per_user_rooms_send_user_events_to_that_user_only(self):
        """With per-user rooms an event reaches its user's browsers; system events reach all."""
        alice_event = ["order_event", {"orderid": "1"}, "alice"]
        bob_event = ["order_event", {"orderid": "2"}, "bob"]
        system_event = ["master_contract_download", {"status": "success"}, None]

        def configure(sio: socketio.Server) -> None:
            with_user_rooms(sio)
            install_relay(sio, SECRET, per_user_rooms=True)

        with (
            plain_server(configure) as url,
            browser_tab(url, user="alice") as alice,
            browser_tab(url, user="bob") as bob,
            relay_client(url) as client,
        ):
            assert relay(client, [alice_event, bob_event, system_event, MARKER]) == 4
            alice_got = alice.wait_for(3)
            bob_got = bob.wait_for(3)
        system, marker = tuple(system_event[:2]), tuple(MARKER[:2])
        assert alice_got == [tuple(alice_event[:2]), system, marker]
        assert bob_got == [tuple(bob_event[:2]), system, marker]


def test_tells_a_client_the_most_its_server_takes_in_one_message():
    """What the forwarder keeps each call under, read from the server when asked."""

    def configure(sio: socketio.Server) -> None:
        install_relay(sio, SECRET)
        sio.eio.max_http_buffer_size = 50_000

    with plain_server(configure) as url, relay_client(url) as client:
        answer = client.call(RELAY_LIMITS_EVENT, namespace=RELAY_NAMESPACE, timeout=30)
    assert answer == {"max_bytes": 50_000}


@pytest.mark.integration
class TestRelayOnFlaskSocketIO:
    def test_relays_with_the_secret_and_refuses_without_it(self, tmp_path):
        """Under Flask-SocketIO the secret admits a client, anything else is refused and logged."""
        log_path = tmp_path / "server.log"
        with RelayServer(SECRET, log_path) as server, browser_tab(server.url) as browser:
            for auth in ({"secret": WRONG}, {}):
                with pytest.raises(socketio.exceptions.ConnectionError):
                    connect_relay(server.url, auth)
            with relay_client(server.url) as client:
                assert relay(client, ITEMS) == len(ITEMS)
                limits = client.call(RELAY_LIMITS_EVENT, namespace=RELAY_NAMESPACE, timeout=30)
            assert limits == {"max_bytes": 1_000_000}, "Flask-SocketIO's default"
            received = browser.wait_for(len(ITEMS))
            wait_until(
                lambda: server.log_text().count("relay connection refused") == 2, what="logs"
            )
        assert json.dumps(received) == json.dumps(EXPECTED)
        log = server.log_text()
        assert "WARNING emitter.relay relay connection refused (wrong secret)" in log
        assert "WARNING emitter.relay relay connection refused (no secret presented)" in log
        assert "from 127.0.0.1" in log
        assert SECRET not in log
        assert WRONG not in log

    def test_per_user_rooms_under_flask_socketio(self, tmp_path):
        """Flask-SocketIO rooms work the same: a user's event reaches that user's browser only."""
        with (
            RelayServer(SECRET, tmp_path / "server.log", per_user_rooms=True) as server,
            browser_tab(server.url, user="bob") as bob,
            relay_client(server.url) as client,
        ):
            assert relay(client, [*ITEMS, MARKER]) == len(ITEMS) + 1
            received = bob.wait_for(len(EXPECTED_BOB))
        assert received == EXPECTED_BOB
