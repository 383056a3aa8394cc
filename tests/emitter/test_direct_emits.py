"""The emit wrapper: forwarded events reach the publisher once, everything else passes untouched."""

from __future__ import annotations

import types
from typing import Any

import pytest

from emitter import EventPublisherFactory
from emitter.contract import RELAY_BATCH_EVENT
from emitter.direct_emits import FORWARDED_EVENTS, forward_direct_emits, original_emit
from emitter.relay import install_relay
from tests.emitter.conftest import Peer

SOCKETIO = {"ORDER_EVENT_MODE": "SOCKETIO,KAFKA"}
KAFKA = {"ORDER_EVENT_MODE": "KAFKA"}
DOWNLOADED = {"status": "success", "message": "Successfully Downloaded"}
RELAY_SECRET = "relay-secret-for-the-emit-tests"


class Server:
    """Stands in for the app's Socket.IO server: records each emit, keeps registered handlers."""

    def __init__(self) -> None:
        self.emitted: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.handlers: dict[tuple[str, str], Any] = {}

    def emit(self, event: str, *args: Any, **kwargs: Any) -> str:
        self.emitted.append((event, args, kwargs))
        return "emitted"

    def on(self, event: str, handler: Any, namespace: str = "/") -> None:
        self.handlers[(event, namespace)] = handler


def broker_module(server: Server) -> types.ModuleType:
    """A module like OpenAlgo's master_contract_db: it took `socketio` at import time."""
    module = types.ModuleType("master_contract_db")
    module.socketio = server
    module.downloaded = lambda: module.socketio.emit("master_contract_download", DOWNLOADED)
    return module


class TestForwardDirectEmits:
    def test_a_module_that_took_the_server_earlier_is_forwarded_and_not_emitted(
        self, publisher_env: str, peer: Peer
    ):
        """Browsers through the forwarder: one Kafka-and-browser event, no emit of its own."""
        server = Server()
        module = broker_module(server)
        forward_direct_emits(server, SOCKETIO)
        assert module.downloaded() is None
        (envelope,) = peer.envelopes(1)
        assert (envelope.event, envelope.data, envelope.browser) == (
            "master_contract_download",
            DOWNLOADED,
            True,
        )
        assert (envelope.topic, envelope.user_id, envelope.key) == (None, None, "admin")
        assert server.emitted == []

    def test_kafka_only_emits_as_before_and_publishes_for_kafka_alone(
        self, publisher_env: str, peer: Peer
    ):
        """Browsers served by the app: the emit happens here, the forwarder must not relay it."""
        server = Server()
        forward_direct_emits(server, KAFKA)
        assert server.emit("master_contract_download", DOWNLOADED) == "emitted"
        (envelope,) = peer.envelopes(1)
        assert (envelope.event, envelope.browser) == ("master_contract_download", False)
        assert server.emitted == [("master_contract_download", (DOWNLOADED,), {})]

    @pytest.mark.parametrize(
        "event", ["force_logout", "download_progress", "order_event", "analyzer_update"]
    )
    def test_other_events_pass_straight_through(self, publisher_env: str, peer: Peer, event: str):
        """Security events and events the bus subscriber emits never touch the publisher."""
        server = Server()
        forward_direct_emits(server, SOCKETIO)
        assert server.emit(event, {"reason": "x"}, namespace="/") == "emitted"
        assert server.emitted == [(event, ({"reason": "x"},), {"namespace": "/"})]
        assert peer.nothing_more()

    def test_force_logout_needs_no_forwarder(self, monkeypatch: pytest.MonkeyPatch):
        """With the publisher unable to deliver at all, force_logout is emitted all the same."""
        monkeypatch.setenv("FORWARDER_ENDPOINT", "tcp://10.1.2.3:1")
        server = Server()
        forward_direct_emits(server, SOCKETIO)
        server.emit("force_logout", {"reason": "password changed"})
        assert server.emitted == [("force_logout", ({"reason": "password changed"},), {})]

    @pytest.mark.parametrize(
        "kwargs", [{"to": "sid-1"}, {"room": "alice"}, {"namespace": "/market"}, {"callback": len}]
    )
    def test_an_emit_to_fewer_than_every_browser_is_emitted_here(
        self, publisher_env: str, peer: Peer, kwargs: dict[str, Any]
    ):
        """The relay broadcasts on /: an emit aimed elsewhere stays the app's, Kafka still hears."""
        server = Server()
        forward_direct_emits(server, SOCKETIO)
        server.emit("master_contract_download", DOWNLOADED, **kwargs)
        assert server.emitted == [("master_contract_download", (DOWNLOADED,), kwargs)]
        (envelope,) = peer.envelopes(1)
        assert envelope.browser is False

    def test_a_dropped_publish_falls_back_to_the_apps_own_emit(
        self, monkeypatch: pytest.MonkeyPatch
    ):
        """If the publisher cannot queue it, the browser still gets the event once, from here."""
        monkeypatch.setenv("FORWARDER_ENDPOINT", "tcp://10.1.2.3:1")
        server = Server()
        forward_direct_emits(server, SOCKETIO)
        assert server.emit("master_contract_download", DOWNLOADED) == "emitted"
        assert server.emitted == [("master_contract_download", (DOWNLOADED,), {})]
        assert EventPublisherFactory.get_publisher().stats().dropped == 1

    def test_a_password_change_is_keyed_by_its_user(self, publisher_env: str, peer: Peer):
        """The seed's password_change names its user in the payload: Kafka keys it so."""
        server = Server()
        forward_direct_emits(server, SOCKETIO)
        server.emit("password_change", {"user": "alice", "status": "success", "message": "ok"})
        (envelope,) = peer.envelopes(1)
        assert (envelope.user_id, envelope.key) == ("alice", "alice")

    def test_an_api_key_in_a_direct_payload_is_not_published(self, publisher_env: str, peer: Peer):
        """The same rule as for bus events: no API key leaves the process."""
        server = Server()
        forward_direct_emits(server, SOCKETIO)
        server.emit("master_contract_download", {**DOWNLOADED, "X-API-KEY": "k-123456"})
        (frame,) = peer.frames(1)
        assert b"k-123456" not in frame

    def test_installing_twice_wraps_once(self, publisher_env: str, peer: Peer):
        """A second call returns the first wrapper: no event is published twice."""
        server = Server()
        first = forward_direct_emits(server, SOCKETIO)
        assert forward_direct_emits(server, KAFKA) is first
        server.emit("master_contract_download", DOWNLOADED)
        peer.envelopes(1)
        assert peer.nothing_more()

    def test_the_forwarded_events_are_the_seeds_direct_ones(self):
        """Only events OpenAlgo's bus subscriber never emits, so Kafka gets none twice."""
        assert frozenset({"master_contract_download", "password_change"}) == FORWARDED_EVENTS


class TestNoLoopThroughTheRelay:
    @pytest.mark.parametrize("wrapper_first", [True, False])
    def test_relayed_events_go_to_browsers_without_being_published_again(
        self, publisher_env: str, peer: Peer, wrapper_first: bool
    ):
        """Whichever is installed first, the relay emits with the original emit."""
        server = Server()
        if wrapper_first:
            forward_direct_emits(server, SOCKETIO)
        install_relay(server, RELAY_SECRET)
        if not wrapper_first:
            forward_direct_emits(server, SOCKETIO)
        relay_batch = server.handlers[(RELAY_BATCH_EVENT, "/openalgo-forwarder")]
        assert relay_batch("sid", [["master_contract_download", DOWNLOADED, None]]) == 1
        assert server.emitted == [
            ("master_contract_download", (DOWNLOADED,), {"namespace": "/", "to": None})
        ]
        assert peer.nothing_more()

    def test_original_emit_of_an_unwrapped_server_is_its_emit(self):
        server = Server()
        assert original_emit(server) == server.emit
