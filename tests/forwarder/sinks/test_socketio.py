"""The Socket.IO sink against a real Flask-SocketIO server running the relay in a subprocess."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest
import socketio
import structlog

from emitter.contract import RELAY_BATCH_EVENT, RELAY_LIMITS_EVENT, RELAY_NAMESPACE, Envelope
from emitter.relay import install_relay
from forwarder.errors import PermanentSinkError, RetriableSinkError
from forwarder.sinks.base import Delivery
from forwarder.sinks.settings import SocketIOSettings
from forwarder.sinks.socketio import CALL_MAX, SocketIOSink, call_size
from harness.browser import browser_tab
from harness.relay_app import RelayServer
from harness.waits import wait_until
from tests.support.browser_events import browser_batch, relayed
from tests.support.plain_server import plain_server

SECRET = "sink-relay-secret-0123456789abcdef"
WRONG = "a-wrong-relay-secret-fedcba987654"


def seen(batch: Sequence[Envelope]) -> list[tuple[str, Any]]:
    return [(e.event, e.data) for e in batch]


def all_retriable(outcome: Delivery | RetriableSinkError, size: int) -> bool:
    """Whether nothing of the batch was acknowledged and every index may be sent again."""
    if isinstance(outcome, RetriableSinkError):
        return True
    return sorted(outcome.failed) == list(range(size)) and all(
        isinstance(error, RetriableSinkError) for error in outcome.failed.values()
    )


def attempt(sink: SocketIOSink, batch: Sequence[Envelope]) -> Delivery | RetriableSinkError:
    try:
        return sink.deliver(batch)
    except RetriableSinkError as exc:
        return exc


def settings(url: str, secret: str = SECRET, **more: Any) -> SocketIOSettings:
    return SocketIOSettings(url=url, relay_secret=secret, ack_timeout_s=2, **more)


@pytest.fixture
def server(tmp_path) -> Iterator[RelayServer]:
    with RelayServer(SECRET, tmp_path / "server.log") as started:
        yield started


@pytest.fixture
def make_sink() -> Iterator[Any]:
    sinks: list[SocketIOSink] = []

    def make(url: str, secret: str = SECRET, **more: Any) -> SocketIOSink:
        sinks.append(SocketIOSink(settings(url, secret, **more)))
        return sinks[-1]

    yield make
    for sink in sinks:
        sink.close()


class TestSocketIOSinkWants:
    @pytest.mark.parametrize("browser", [True, False])
    def test_takes_only_events_the_browser_received(self, browser):
        """Live failures recorded for Kafka only never reach the relay."""
        sink = SocketIOSink(settings("http://127.0.0.1:9"))
        event = msgspec.structs.replace(relayed(0, "order_event", {}), browser=browser)
        assert sink.wants(event) is browser


@pytest.mark.integration
class TestSocketIOSinkDeliver:
    def test_every_browser_event_arrives_identical_and_in_order(self, server, make_sink):
        """Every browser event type arrives in order with the same keys, types and nesting."""
        batch = browser_batch()
        sink = make_sink(server.url)
        with browser_tab(server.url) as browser:
            assert not sink.deliver(batch[:5]).failed
            assert not sink.deliver(batch[5:]).failed
            received = browser.wait_for(len(batch))
        assert json.dumps(received) == json.dumps(seen(batch))

    def test_a_large_batch_is_acknowledged_with_its_count_in_order(self, server, make_sink):
        """Five hundred events go out in one call, all acknowledged, in the order given."""
        batch = [relayed(n, "order_event", {"orderid": str(n), "n": n}) for n in range(500)]
        sink = make_sink(server.url)
        with browser_tab(server.url) as browser:
            assert sink.deliver(batch) == Delivery()
            received = browser.wait_for(len(batch))
        assert received == seen(batch)

    def test_msgpack_only_values_arrive_as_the_kafka_json_shows_them(self, server, make_sink):
        """Bytes and datetimes become the base64 and ISO strings Kafka's JSON carries for them."""
        when = dt.datetime(2026, 1, 29, 10, 30, 45, 123456, tzinfo=dt.UTC)
        data = {"raw": b"\x00\xff", "at": when, "nested": [{"at": when}]}
        batch = [relayed(0, "order_update", data)]
        sink = make_sink(server.url)
        with browser_tab(server.url) as browser:
            assert not sink.deliver(batch).failed
            received = browser.wait_for(1)
        as_json = msgspec.json.decode(msgspec.json.encode(batch[0].data))
        assert received == [("order_update", as_json)]
        assert as_json["at"] == "2026-01-29T10:30:45.123456Z"

    def test_events_no_browser_can_take_fail_permanently_alone(self, server, make_sink):
        """A payload with no JSON form or a reserved name fails; the events around it still go."""
        batch = browser_batch()[:3]
        batch.insert(1, relayed(9, "order_event", {"ext": msgspec.msgpack.Ext(7, b"x")}))
        batch.insert(3, relayed(10, "disconnect", {}))
        sink = make_sink(server.url)
        with browser_tab(server.url) as browser:
            delivery = sink.deliver(batch)
            assert not sink.deliver(browser_batch()[3:4]).failed
            received = browser.wait_for(4)
        assert sorted(delivery.failed) == [1, 3]
        assert all(isinstance(e, PermanentSinkError) for e in delivery.failed.values())
        assert received == seen([batch[0], batch[2], batch[4], *browser_batch()[3:4]])

    def test_a_batch_with_nothing_sendable_fails_without_a_connection(self, make_sink):
        """Events no browser could decode fail permanently even while the relay is unreachable."""
        ext = relayed(0, "order_event", {"ext": msgspec.msgpack.Ext(7, b"x")})
        delivery = make_sink("http://127.0.0.1:9").deliver([ext])
        assert list(delivery.failed) == [0]
        assert isinstance(delivery.failed[0], PermanentSinkError)

    def test_check_connects_and_close_lets_a_later_deliver_reconnect(self, server, make_sink):
        """check reaches the relay; after close the next deliver connects again by itself."""
        sink = make_sink(server.url)
        assert server.url in sink.check()
        sink.close()
        with browser_tab(server.url) as browser:
            assert not sink.deliver(browser_batch()[:1]).failed
            assert len(browser.wait_for(1)) == 1


def with_relay(sio: socketio.Server) -> None:
    install_relay(sio, SECRET)


@pytest.fixture
def certificate(tmp_path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, as an internal CA would sign one."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.mark.integration
class TestSocketIOSinkReachingTheApp:
    def test_a_unix_socket_url_connects_straight_to_the_apps_socket(self, tmp_path, make_sink):
        """unix:PATH (gunicorn's --bind form) reaches the relay with no TCP port, and again after
        the connection is lost."""
        with plain_server(with_relay, unix_path=tmp_path / "app.sock") as url:
            sink = make_sink(url)
            assert url in sink.check()
            assert not sink.deliver(browser_batch()[:3]).failed
            sink.close()
            assert not sink.deliver(browser_batch()[3:5]).failed

    def test_a_unix_socket_nobody_listens_on_is_retriable(self, tmp_path, make_sink):
        """A missing socket file (the app not started yet) is an outage, named, not a crash."""
        sink = make_sink(f"unix:{tmp_path / 'absent.sock'}")
        with pytest.raises(RetriableSinkError, match=r"absent\.sock"):
            sink.deliver(browser_batch()[:1])

    def test_an_https_url_is_verified_against_the_ca_file(self, certificate, make_sink):
        """Without SOCKETIO_CA_FILE a certificate the system does not trust is refused; with it,
        the relay is reached."""
        cert, key = certificate
        with plain_server(with_relay, ssl_context=(str(cert), str(key))) as url:
            with pytest.raises(RetriableSinkError, match="cannot reach the relay"):
                make_sink(url).check()
            sink = make_sink(url, ca_file=str(cert))
            assert str(cert) in sink.check()
            assert not sink.deliver(browser_batch()[:2]).failed


@pytest.mark.integration
class TestSocketIOSinkOutage:
    def test_no_server_is_retriable(self, make_sink):
        """With nothing listening, deliver and check raise retriable errors naming the URL."""
        sink = make_sink("http://127.0.0.1:9")
        with pytest.raises(RetriableSinkError, match=r"http://127\.0\.0\.1:9"):
            sink.deliver(browser_batch()[:1])
        with pytest.raises(RetriableSinkError, match=r"http://127\.0\.0\.1:9"):
            sink.check()

    def test_a_restarted_server_gets_the_retried_batch_and_nothing_acknowledged_is_lost(
        self, server, make_sink
    ):
        """Retriable while the server is down; after its restart the same sink delivers again."""
        first, second = browser_batch()[:4], browser_batch(100)[4:]
        sink = make_sink(server.url)
        with browser_tab(server.url) as browser:
            assert not sink.deliver(first).failed
            assert browser.wait_for(len(first)) == seen(first)
            server.stop()
            wait_until(lambda: not browser.connected, what="the browser to notice the outage")
            assert all_retriable(attempt(sink, second), len(second))
            assert all_retriable(attempt(sink, second), len(second))
            assert browser.events() == seen(first)
        server.start()
        with browser_tab(server.url) as reloaded:
            assert not sink.deliver(second).failed
            assert reloaded.wait_for(len(second)) == seen(second)

    def test_a_wrong_secret_is_retriable_and_logged_without_the_secret(self, server, make_sink):
        """A refused secret raises a retriable error and logs relay_auth_refused, secret-free."""
        sink = make_sink(server.url, WRONG)
        with structlog.testing.capture_logs() as logs:
            with pytest.raises(RetriableSinkError, match="refused SOCKETIO_RELAY_SECRET") as denied:
                sink.deliver(browser_batch()[:1])
            with pytest.raises(RetriableSinkError, match="refused") as checked:
                sink.check()
        assert [entry["event"] for entry in logs] == ["relay_auth_refused"] * 2
        assert {entry["log_level"] for entry in logs} == {"warning"}
        for text in (str(logs), str(denied.value), str(checked.value)):
            assert WRONG not in text
            assert SECRET not in text
        wait_until(
            lambda: "refused (wrong secret)" in server.log_text(), what="the relay's warning"
        )
        assert WRONG not in server.log_text()

    def test_a_secret_not_set_yet_holds_events_and_names_the_setting(self, server, make_sink):
        """An empty SOCKETIO_RELAY_SECRET (the shipped .sample.env) is retriable: events wait,
        the relay never sees a connection, and the error says which setting to fill in."""
        sink = make_sink(server.url, "")
        with structlog.testing.capture_logs() as logs:
            with pytest.raises(RetriableSinkError, match="SOCKETIO_RELAY_SECRET is not set"):
                sink.deliver(browser_batch()[:1])
            with pytest.raises(RetriableSinkError, match="SOCKETIO_RELAY_SECRET is not set"):
                sink.check()
        assert [entry["event"] for entry in logs] == ["relay_secret_missing"] * 2
        assert "relay client" not in server.log_text()


def sized(n: int, size: int, text: str = "x") -> Envelope:
    """An order event whose payload carries `size` characters of `text`."""
    return relayed(n, "order_event", {"n": n, "pad": text * size})


class TestCallSize:
    @pytest.mark.parametrize("text", ["x", "é", "\U0001f4c8", '"\\'])
    def test_is_the_message_the_client_sends_with_room_for_any_acknowledgement_id(self, text):
        """Measured by encoding the call as the client does: escapes and all, never under."""
        items = [["order_event", {"pad": text * 50, "n": [1, 2.5, None]}, "alice"]] * 3
        for ack_id in (1, 123_456):
            sent = socketio.packet.Packet(
                socketio.packet.EVENT,
                [RELAY_BATCH_EVENT, items],
                namespace=RELAY_NAMESPACE,
                id=ack_id,
            ).encode()
            reserve = 20 - len(str(ack_id))
            assert call_size(RELAY_NAMESPACE, items) == 1 + len(sent) + reserve


@pytest.mark.integration
class TestSocketIOSinkCallBytes:
    def test_a_relay_server_with_a_smaller_buffer_gets_calls_it_takes(self, make_sink):
        """A server that takes 20,000 bytes a message gets every event, in calls under that."""

        def configure(sio: socketio.Server) -> None:
            install_relay(sio, SECRET)
            sio.eio.max_http_buffer_size = 20_000

        batch = [sized(n, 1_000, "é") for n in range(200)]
        with plain_server(configure) as url, browser_tab(url) as browser:
            sink = make_sink(url)
            assert not sink.deliver(batch).failed
            assert sink.call_limit == 20_000
            received = browser.wait_for(len(batch))
        assert [payload["n"] for _, payload in received] == list(range(200))

    def test_an_event_too_large_for_any_call_fails_alone_and_permanently(self, make_sink):
        """Its neighbours are delivered; it is refused for good, saying why, not retried."""
        with (
            plain_server(lambda sio: install_relay(sio, SECRET)) as url,
            browser_tab(url) as browser,
        ):
            sink = make_sink(url, max_call_bytes=10_000)
            delivery = sink.deliver([sized(0, 10), sized(1, 10_000), sized(2, 10)])
            received = browser.wait_for(2)
        assert list(delivery.failed) == [1]
        assert isinstance(delivery.failed[1], PermanentSinkError)
        assert "bytes on the wire" in str(delivery.failed[1])
        assert [payload["n"] for _, payload in received] == [0, 2]


class ScriptedRelay:
    """A relay stand-in on a real server whose acknowledgements the test chooses."""

    def __init__(self) -> None:
        self.answers: list[Any] = []
        self.batches: list[Any] = []
        self.release = threading.Event()
        self.limits: Any = {"max_bytes": 1_000_000}

    def install(self, sio: socketio.Server) -> None:
        @sio.on(RELAY_LIMITS_EVENT, namespace=RELAY_NAMESPACE)
        def on_limits(sid: str) -> Any:
            if self.limits == "hang":
                self.release.wait(30)
            return self.limits

        @sio.on(RELAY_BATCH_EVENT, namespace=RELAY_NAMESPACE)
        def on_batch(sid: str, items: Any) -> Any:
            self.batches.append(items)
            answer = self.answers.pop(0) if self.answers else len(items)
            if answer == "hang":
                self.release.wait(30)
                return None
            return answer


@pytest.fixture
def scripted() -> Iterator[tuple[ScriptedRelay, str]]:
    relay = ScriptedRelay()
    try:
        with plain_server(relay.install) as url:
            yield relay, url
    finally:
        relay.release.set()


@pytest.mark.integration
class TestSocketIOSinkAcknowledgements:
    def test_a_short_count_leaves_the_rest_retriable(self, scripted, make_sink):
        """An acknowledgement of n marks the first n delivered and the others retriable."""
        relay, url = scripted
        relay.answers = [2]
        delivery = make_sink(url).deliver(browser_batch()[:5])
        assert sorted(delivery.failed) == [2, 3, 4]
        assert all(isinstance(e, RetriableSinkError) for e in delivery.failed.values())
        assert "emitted 2 of 5" in str(delivery.failed[2])

    def test_a_batch_larger_than_one_call_goes_in_order_in_calls_of_call_max(
        self, scripted, make_sink
    ):
        """Each call stays small for the relay; together they carry the batch in order."""
        relay, url = scripted
        relay.answers = [CALL_MAX, CALL_MAX, 200]
        batch = [relayed(n, "order_event", {"n": n}) for n in range(2 * CALL_MAX + 200)]
        assert not make_sink(url).deliver(batch).failed
        assert [len(call) for call in relay.batches] == [CALL_MAX, CALL_MAX, 200]
        assert [item[1]["n"] for call in relay.batches for item in call] == list(range(len(batch)))

    def test_a_short_count_in_a_later_call_stops_the_batch_there(self, scripted, make_sink):
        """Events after the first one the relay did not emit are not sent: order is kept."""
        relay, url = scripted
        relay.answers = [CALL_MAX, 10]
        batch = [relayed(n, "order_event", {"n": n}) for n in range(3 * CALL_MAX)]
        delivery = make_sink(url).deliver(batch)
        assert sorted(delivery.failed) == list(range(CALL_MAX + 10, 3 * CALL_MAX))
        assert len(relay.batches) == 2

    @pytest.mark.parametrize("answer", [None, "3", True, -1])
    def test_an_answer_that_is_no_count_acknowledges_nothing(self, scripted, make_sink, answer):
        """Anything but a count leaves the whole batch retriable."""
        relay, url = scripted
        relay.answers = [answer]
        delivery = make_sink(url).deliver(browser_batch()[:3])
        assert sorted(delivery.failed) == [0, 1, 2]

    def test_calls_stay_under_the_relays_limit_and_carry_no_more_than_call_max(
        self, scripted, make_sink
    ):
        """Split by bytes and by count, in order; each call measured under the limit."""
        relay, url = scripted
        relay.limits = {"max_bytes": 30_000}
        batch = [sized(n, 900) for n in range(100)] + [sized(n, 1) for n in range(100, 700)]
        assert not make_sink(url).deliver(batch).failed
        assert all(call_size(RELAY_NAMESPACE, call) <= 30_000 for call in relay.batches)
        assert max(len(call) for call in relay.batches) == CALL_MAX
        assert [item[1]["n"] for call in relay.batches for item in call] == list(range(700))

    def test_a_relay_that_does_not_say_its_limit_leaves_socketio_max_call_bytes(
        self, scripted, make_sink
    ):
        """A relay from before limits were asked: the forwarder's own limit alone applies."""
        relay, url = scripted
        relay.limits = "hang"
        relay.answers = [3]
        sink = make_sink(url, max_call_bytes=8_192)
        assert not sink.deliver(browser_batch()[:3]).failed
        assert sink.call_limit == 8_192

    def test_a_lost_acknowledgement_times_out_retriable_and_the_sink_recovers(
        self, scripted, make_sink
    ):
        """No acknowledgement within the timeout fails the batch retriably; the next one goes."""
        relay, url = scripted
        relay.answers = ["hang", 3]
        sink = make_sink(url)
        batch = browser_batch()[:3]
        delivery = sink.deliver(batch)
        assert all_retriable(delivery, 3)
        assert "no acknowledgement" in str(delivery.failed[0])
        relay.release.set()
        assert not sink.deliver(batch).failed
        assert relay.batches[0] == relay.batches[1]
