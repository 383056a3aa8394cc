"""The publisher sends exactly the seed's events, never raises, survives fork and exits on time."""

from __future__ import annotations

import datetime
import logging
import os
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emitter import (
    SCHEMA_VERSION,
    SYSTEM_KEY,
    EventPublisher,
    EventPublisherFactory,
    PublisherStats,
    PushTransport,
    decode_envelope,
    encode_event,
    get_event_publisher,
)
from tests.emitter.conftest import Peer

EVENT_ID = re.compile(r"^[0-9a-f]{32}$")

SEED_CALLS: list[tuple[str, Callable[[EventPublisher], bool], str, dict[str, Any], str | None]] = [
    (
        "order_event",
        lambda p: p.publish_order_event(
            "user123", "SBIN-EQ", "BUY", "ORD123", "live", broker="angel", quantity="1"
        ),
        "user123",
        {
            "symbol": "SBIN-EQ",
            "action": "BUY",
            "orderid": "ORD123",
            "mode": "live",
            "broker": "angel",
            "quantity": "1",
        },
        "user123",
    ),
    (
        "analyzer_update",
        lambda p: p.publish_analyzer_update(
            "user123", {"symbol": "SBIN", "quantity": 5}, {"status": "success", "orderid": "9"}
        ),
        "user123",
        {
            "request": {"symbol": "SBIN", "quantity": 5},
            "response": {"status": "success", "orderid": "9"},
        },
        "user123",
    ),
    (
        "order_notification",
        lambda p: p.publish_order_notification(
            "user123", "SBIN-EQ", "info", "Position already matched", exchange="NSE"
        ),
        "user123",
        {
            "symbol": "SBIN-EQ",
            "status": "info",
            "message": "Position already matched",
            "exchange": "NSE",
        },
        "user123",
    ),
    (
        "master_contract_download",
        lambda p: p.publish_master_contract_download(
            "angel", "success", "Downloaded", symbols_count=120000, download_time_seconds=4.5
        ),
        SYSTEM_KEY,
        {
            "broker": "angel",
            "status": "success",
            "message": "Downloaded",
            "symbols_count": 120000,
            "download_time_seconds": 4.5,
        },
        None,
    ),
    (
        "password_change",
        lambda p: p.publish_password_change(
            "user123", "success", "Password changed", ip_address="127.0.0.1", user_agent="ua"
        ),
        "user123",
        {
            "user": "user123",
            "status": "success",
            "message": "Password changed",
            "ip_address": "127.0.0.1",
            "user_agent": "ua",
        },
        "user123",
    ),
]


@pytest.fixture
def publisher(endpoint: str) -> Any:
    publisher = EventPublisher(PushTransport(endpoint))
    try:
        yield publisher
    finally:
        publisher.close()


class TestSeedMethods:
    @pytest.mark.parametrize("case", SEED_CALLS, ids=[c[0] for c in SEED_CALLS])
    def test_the_peer_receives_exactly_the_seed_event(
        self, publisher: EventPublisher, peer: Peer, case
    ):
        """Each seed method sends its Socket.IO event name, payload and Kafka key, nothing else."""
        event, call, key, data, user_id = case
        before = time.time_ns()
        assert call(publisher) is True
        (envelope,) = peer.envelopes(1)
        assert envelope.v == SCHEMA_VERSION
        assert EVENT_ID.match(envelope.id)
        assert before <= envelope.ts <= time.time_ns()
        assert envelope.event == event
        assert envelope.data == data
        assert list(envelope.data) == list(data)
        assert envelope.user_id == user_id
        assert envelope.key == key
        assert envelope.topic is None
        assert envelope.browser is True


class TestEmit:
    def test_every_envelope_field_is_sent_as_given(self, publisher: EventPublisher, peer: Peer):
        """Key, topic and the browser flag reach the forwarder unchanged."""
        data = {"a": [1, 2.5, None, True], "b": {"c": "d"}}
        assert publisher.emit(
            "order.failed", data, user_id="u1", key="k1", topic="t", browser=False
        )
        (envelope,) = peer.envelopes(1)
        assert (envelope.event, envelope.user_id, envelope.key) == ("order.failed", "u1", "k1")
        assert (envelope.topic, envelope.browser, envelope.data) == ("t", False, data)

    def test_the_event_is_a_snapshot_of_the_callers_data(
        self, publisher: EventPublisher, peer: Peer
    ):
        """Changing the dict after the call does not change what was published."""
        data: dict[str, Any] = {"orders": [{"qty": 1}], "status": "open"}
        publisher.emit("order_event", data)
        data["orders"][0]["qty"] = 99
        data["status"] = "changed"
        (envelope,) = peer.envelopes(1)
        assert envelope.data == {"orders": [{"qty": 1}], "status": "open"}

    def test_event_ids_are_unique_and_share_the_process_prefix(
        self, publisher: EventPublisher, peer: Peer
    ):
        """Ids are 32 hex characters: the process's random half, then a counter."""
        for i in range(100):
            publisher.emit("e", {"i": i})
        ids = [envelope.id for envelope in peer.envelopes(100)]
        assert len(set(ids)) == 100
        assert all(EVENT_ID.match(i) for i in ids)
        assert len({i[:16] for i in ids}) == 1

    def test_a_numeric_user_id_is_sent_as_text(self, publisher: EventPublisher, peer: Peer):
        """A user id read from a database as an integer still keys the event."""
        assert publisher.publish_order_event(42, "SBIN", "BUY", "1", "live")  # type: ignore[arg-type]
        (envelope,) = peer.envelopes(1)
        assert (envelope.user_id, envelope.key) == ("42", "42")

    def test_values_json_lacks_still_travel(self, publisher: EventPublisher, peer: Peer):
        """Dates, sets and tuples are encoded (sinks turn them into JSON) instead of failing."""
        when = datetime.datetime(2026, 1, 29, 10, 30, tzinfo=datetime.UTC)
        assert publisher.emit("e", {"when": when, "tags": {"x"}, "pair": (1, 2)})
        (envelope,) = peer.envelopes(1)
        assert envelope.data == {"when": when, "tags": ["x"], "pair": [1, 2]}


BAD_CALLS: list[tuple[str, Callable[[EventPublisher], bool]]] = [
    ("object value", lambda p: p.emit("e", {"x": object()})),
    ("huge int", lambda p: p.emit("e", {"x": 2**70})),
    ("list data", lambda p: p.emit("e", [1, 2])),  # type: ignore[arg-type]
    ("None data", lambda p: p.emit("e", None)),  # type: ignore[arg-type]
    ("int keys", lambda p: p.emit("e", {1: "x"})),  # type: ignore[dict-item]
    ("empty event", lambda p: p.emit("", {})),
    ("event not text", lambda p: p.emit(7, {})),  # type: ignore[arg-type]
    ("key not text", lambda p: p.emit("e", {}, key=3.5)),  # type: ignore[arg-type]
    ("topic not text", lambda p: p.emit("e", {}, topic=b"t")),  # type: ignore[arg-type]
    ("browser not bool", lambda p: p.emit("e", {}, browser="yes")),  # type: ignore[arg-type]
    ("user id object", lambda p: p.publish_order_event(object(), "S", "B", "1", "live")),  # type: ignore[arg-type]
    ("object kwarg", lambda p: p.publish_order_event("u", "S", "B", "1", "live", x=object())),
    ("object request", lambda p: p.publish_analyzer_update("u", object(), {})),
    ("huge int kwarg", lambda p: p.publish_master_contract_download("b", "s", "m", n=-(2**80))),
    ("cyclic data", lambda p: p.publish_password_change("u", "s", "m", me=cyclic())),
]


def cyclic() -> dict[str, Any]:
    data: dict[str, Any] = {}
    data["self"] = data
    return data


def total(stats: PublisherStats) -> int:
    return stats.queued + stats.dropped + stats.failed_to_encode


class TestNeverRaises:
    @pytest.mark.parametrize("call", [c[1] for c in BAD_CALLS], ids=[c[0] for c in BAD_CALLS])
    def test_unsendable_arguments_return_false_and_are_counted(
        self, publisher: EventPublisher, peer: Peer, call
    ):
        """Bad arguments never raise: the call returns False and counts a failed encode."""
        assert call(publisher) is False
        assert publisher.stats() == PublisherStats(0, 0, 0, 0, failed_to_encode=1)
        assert peer.nothing_more()

    def test_encode_failures_are_logged_at_most_once_per_interval(
        self, publisher: EventPublisher, caplog: pytest.LogCaptureFixture
    ):
        """A flood of bad calls logs one warning naming the latest error, not one per call."""
        caplog.set_level(logging.WARNING, logger="emitter")
        for _ in range(100):
            publisher.emit("e", {"x": object()})
        (record,) = [r for r in caplog.records if "could not be encoded" in r.getMessage()]
        assert "EncodeError" in record.getMessage() or "TypeError" in record.getMessage()

    @settings(
        max_examples=300,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            *settings().suppress_health_check,
        ],
    )
    @given(
        st.fixed_dictionaries(
            {
                "event": st.one_of(st.text(max_size=5), st.integers(), st.none()),
                "data": st.one_of(
                    st.dictionaries(
                        st.one_of(st.text(max_size=3), st.integers()), st.from_type(object)
                    ),
                    st.from_type(object),
                ),
                "user_id": st.one_of(st.none(), st.text(max_size=5), st.integers(), st.floats()),
                "key": st.one_of(st.none(), st.text(max_size=5), st.binary(max_size=3)),
                "browser": st.one_of(st.booleans(), st.integers(0, 1)),
            }
        )
    )
    def test_any_arguments_return_a_bool(self, publisher: EventPublisher, args: dict[str, Any]):
        """Whatever emit is given, it returns True or False, and the counters account for it."""
        before = publisher.stats()
        result = publisher.emit(
            args["event"],
            args["data"],
            user_id=args["user_id"],
            key=args["key"],
            browser=args["browser"],
        )
        after = publisher.stats()
        assert type(result) is bool
        assert total(after) == total(before) + 1

    @settings(max_examples=150)
    @given(
        event=st.text(min_size=1, max_size=10),
        data=st.dictionaries(
            st.text(max_size=5),
            st.recursive(
                st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(),
                lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner),
                max_leaves=10,
            ),
        ),
        user_id=st.one_of(st.none(), st.text(max_size=5)),
        topic=st.one_of(st.none(), st.text(max_size=5)),
    )
    def test_every_encodable_event_decodes_strictly(self, event, data, user_id, topic):
        """What the publisher encodes always passes the forwarder's strict decoder, unchanged."""
        envelope = decode_envelope(encode_event(event, data, user_id=user_id, topic=topic))
        assert (envelope.event, envelope.data, envelope.user_id) == (event, data, user_id)
        assert envelope.key == (user_id or SYSTEM_KEY)


class TestWithoutForwarder:
    def test_publishing_with_nobody_listening_never_raises_and_counts_add_up(
        self, monkeypatch: pytest.MonkeyPatch, endpoint: str
    ):
        """100,000 publishes with no forwarder all return a bool; queued + dropped is the total."""
        monkeypatch.setenv("FORWARDER_ENDPOINT", endpoint)
        monkeypatch.setenv("EMITTER_LINGER_MS", "0")
        publisher = get_event_publisher()
        results = Counter(
            publisher.publish_order_event("u", "SBIN", "BUY", str(i), "live")
            for i in range(100_000)
        )
        stats = publisher.stats()
        assert set(results) <= {True, False}
        assert stats.queued == results[True]
        assert stats.dropped == results[False] > 0
        assert stats.queued + stats.dropped == 100_000
        assert stats.failed_to_encode == 0

    def test_a_process_that_published_exits_within_a_second(self, endpoint: str):
        """Queued events never hold the process: exit waits at most the linger time (500 ms)."""
        script = (
            "from emitter import get_event_publisher\n"
            "p = get_event_publisher()\n"
            "sent = [p.publish_order_event('u', 'S', 'B', str(i), 'live') for i in range(30000)]\n"
            "print(sum(sent), flush=True)\n"
        )
        env = {**os.environ, "FORWARDER_ENDPOINT": endpoint, "EMITTER_LINGER_MS": "500"}
        with subprocess.Popen(
            [sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True
        ) as proc:
            try:
                assert proc.stdout is not None
                queued = int(proc.stdout.readline())
                published_at = time.monotonic()
                proc.wait(timeout=30)
                exit_delay = time.monotonic() - published_at
            finally:
                proc.kill()
        assert queued > 0
        assert proc.returncode == 0
        assert exit_delay < 1.0


class TestLimits:
    def test_an_event_over_emitter_max_event_bytes_is_refused_and_counted_apart(
        self, monkeypatch: pytest.MonkeyPatch, peer: Peer
    ):
        """The encoded size decides: a larger event returns False and counts as too_large."""
        monkeypatch.setenv("FORWARDER_ENDPOINT", peer.endpoint)
        monkeypatch.setenv("EMITTER_MAX_EVENT_BYTES", "2048")
        publisher = get_event_publisher()
        assert publisher.emit("analyzer_update", {"blob": "x" * 5000}) is False
        assert publisher.emit("analyzer_update", {"blob": "x" * 100}) is True
        assert [e.data for e in peer.envelopes(1)] == [{"blob": "x" * 100}]
        assert peer.nothing_more()
        assert publisher.stats() == PublisherStats(1, 0, too_large=1, unsent=0, failed_to_encode=0)


class TestConcurrency:
    def test_eight_threads_deliver_every_event_exactly_once(
        self, monkeypatch: pytest.MonkeyPatch, endpoint: str, peer: Peer
    ):
        """Events from eight threads at once all arrive once each, none mixed up with another."""
        monkeypatch.setenv("FORWARDER_ENDPOINT", endpoint)
        monkeypatch.setenv("EMITTER_SNDHWM", "100000")
        threads_n, per_thread = 8, 10_000
        publisher = get_event_publisher()
        start = threading.Barrier(threads_n)
        refused: list[int] = []

        def publish(thread: int) -> None:
            start.wait()
            for seq in range(per_thread):
                if not publisher.emit(
                    "e", {"thread": thread, "seq": seq, "pad": f"{thread}:{seq}"}
                ):
                    refused.append(seq)

        workers = [threading.Thread(target=publish, args=(t,)) for t in range(threads_n)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        envelopes = peer.envelopes(threads_n * per_thread, timeout_s=30)
        assert refused == []
        assert peer.nothing_more()
        assert len({e.id for e in envelopes}) == threads_n * per_thread
        seen = Counter((e.data["thread"], e.data["seq"]) for e in envelopes)
        assert set(seen.values()) == {1}
        assert len(seen) == threads_n * per_thread
        assert all(e.data["pad"] == f"{e.data['thread']}:{e.data['seq']}" for e in envelopes)


class TestFork:
    @pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
    def test_a_forked_child_publishes_through_its_own_socket(
        self, monkeypatch: pytest.MonkeyPatch, endpoint: str, peer: Peer
    ):
        """After fork the child sends its own events once, with new ids; the parent carries on."""
        monkeypatch.setenv("FORWARDER_ENDPOINT", endpoint)
        publisher = get_event_publisher()
        for i in range(50):
            publisher.emit("e", {"from": "parent", "i": i})
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                child = get_event_publisher()
                sent = [child.emit("e", {"from": "child", "i": i}) for i in range(20)]
                ok = all(sent) and child.stats() == PublisherStats(20, 0, 0, 0, 0)
                child.close()
                status = 0 if ok else 2
            finally:
                os._exit(status)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        for i in range(50, 60):
            assert publisher.emit("e", {"from": "parent", "i": i})
        envelopes = peer.envelopes(80)
        assert peer.nothing_more()
        by_origin = Counter((e.data["from"], e.data["i"]) for e in envelopes)
        assert set(by_origin.values()) == {1}
        assert sum(1 for origin, _ in by_origin if origin == "child") == 20
        prefixes = {e.data["from"]: e.id[:16] for e in envelopes}
        assert prefixes["child"] != prefixes["parent"]
        assert publisher.stats() == PublisherStats(60, 0, 0, 0, 0)


class TestFactory:
    def test_one_publisher_per_process_even_when_threads_race(self, publisher_env: str):
        """Threads asking at the same moment all get the same publisher."""
        start = threading.Barrier(8)
        found: list[EventPublisher] = []

        def get() -> None:
            start.wait()
            found.append(get_event_publisher())

        threads = [threading.Thread(target=get) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len({id(p) for p in found}) == 1
        assert found[0] is EventPublisherFactory.get_publisher()

    def test_reset_closes_the_publisher_and_rereads_the_environment(self, publisher_env: str):
        """After reset the old publisher refuses events and a new one is built."""
        old = get_event_publisher()
        EventPublisherFactory.reset()
        assert old.emit("e", {}) is False
        assert get_event_publisher() is not old

    def test_the_default_endpoint_is_used_when_none_is_set(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path
    ):
        """With no FORWARDER_ENDPOINT, events go to the runtime directory's socket."""
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
        (tmp_path / "openalgo-forwarder").mkdir()
        reader = Peer(f"ipc://{tmp_path}/openalgo-forwarder/events.sock")
        try:
            assert get_event_publisher().emit("e", {"x": 1})
            assert reader.envelopes(1)[0].data == {"x": 1}
        finally:
            reader.close()

    @pytest.mark.parametrize(
        "setting",
        [
            ("EMITTER_SNDHWM", "lots"),
            ("EMITTER_SNDHWM", "0"),
            ("EMITTER_LINGER_MS", "-1"),
            ("EMITTER_MAX_EVENT_BYTES", "1k"),
            ("EMITTER_QUEUE_MAX_BYTES", "0"),
        ],
    )
    def test_a_bad_number_is_logged_and_the_default_used(
        self, monkeypatch: pytest.MonkeyPatch, peer: Peer, caplog: pytest.LogCaptureFixture, setting
    ):
        """A bad number logs one error naming it and publishing carries on with the default."""
        variable, value = setting
        monkeypatch.setenv("FORWARDER_ENDPOINT", peer.endpoint)
        monkeypatch.setenv(variable, value)
        publisher = get_event_publisher()
        (record,) = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert f"{variable}={value!r}" in record.getMessage()
        assert "using the default" in record.getMessage()
        assert publisher.emit("e", {"ok": True})
        assert peer.envelopes(1)[0].data == {"ok": True}

    @pytest.mark.parametrize(
        "endpoint_value", ["tcp://10.1.2.3:5556", "ipc://relative/path", "udp://127.0.0.1:1"]
    )
    def test_a_bad_endpoint_disables_publishing_without_raising(
        self,
        monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture,
        endpoint_value: str,
    ):
        """An unusable endpoint logs one error; every publish then returns False, counted."""
        monkeypatch.setenv("FORWARDER_ENDPOINT", endpoint_value)
        publisher = get_event_publisher()
        results = [publisher.emit("e", {}) for _ in range(3)]
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1
        assert "FORWARDER_ENDPOINT" in errors[0].getMessage()
        assert "publishing is disabled" in errors[0].getMessage()
        assert results == [False] * 3
        assert publisher.stats() == PublisherStats(0, 3, 0, 0, 0)

    def test_a_bad_allow_remote_flag_falls_back_to_loopback_only(
        self,
        monkeypatch: pytest.MonkeyPatch,
        publisher_env: str,
        peer: Peer,
        caplog: pytest.LogCaptureFixture,
    ):
        """An unreadable FORWARDER_ALLOW_REMOTE is logged and treated as its default, off."""
        monkeypatch.setenv("FORWARDER_ALLOW_REMOTE", "maybe")
        publisher = get_event_publisher()
        (record,) = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert "FORWARDER_ALLOW_REMOTE='maybe'" in record.getMessage()
        assert publisher.emit("e", {})
        assert len(peer.envelopes(1)) == 1


class TestImport:
    def test_importing_the_emitter_loads_no_forwarder_dependency(self):
        """The trading process pays for neither Kafka, Socket.IO nor structlog."""
        script = (
            "import sys, emitter, emitter.openalgo\n"
            "print(sorted(m for m in ('kafka', 'socketio', 'engineio', 'structlog') "
            "if m in sys.modules))\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, check=True
        ).stdout
        assert out.strip() == "[]"

    def test_the_public_api_is_sorted_and_importable(self):
        """Everything named in `emitter.__all__` exists, listed constants, classes, functions."""
        import emitter  # noqa: PLC0415 - the module under test

        def isort_style(name: str) -> tuple[int, str]:
            return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)

        assert emitter.__all__ == sorted(emitter.__all__, key=isort_style)
        assert all(hasattr(emitter, name) for name in emitter.__all__)


def test_msgspec_is_the_encoder() -> None:
    """The wire format stays msgspec's msgpack, which the forwarder decodes."""
    frame = encode_event("e", {"a": 1})
    assert msgspec.msgpack.decode(frame)[3] == "e"
