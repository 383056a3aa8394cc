"""The transport queues without blocking, keeps frames across forwarder restarts, counts drops."""

from __future__ import annotations

import gc
import logging
import re
import threading
import weakref

import pytest
import zmq

from emitter.config import CurveKeys
from emitter.transport import DisabledTransport, PushTransport, ThrottledCounter
from tests.emitter.conftest import Peer, wait_until

SINCE = re.compile(r"(\d+) since the last warning")


def frames(count: int, start: int = 0) -> list[bytes]:
    return [f"frame-{i:06d}".encode() for i in range(start, start + count)]


def pumps() -> int:
    return sum(1 for thread in threading.enumerate() if thread.name == "emitter-pump")


def drop_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "emitter" and "dropped" in r.getMessage()]


class TestCurve:
    @pytest.mark.parametrize("right_server_key", [True, False])
    def test_frames_go_only_to_the_server_whose_key_it_was_given(self, right_server_key):
        """With CURVE keys the pump's socket completes a handshake only with the listener that
        holds the secret half of EMITTER_CURVE_SERVER_KEY."""
        server_public, server_secret = zmq.curve_keypair()
        client_public, client_secret = zmq.curve_keypair()
        context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        pull = context.socket(zmq.PULL)
        pull.setsockopt(zmq.LINGER, 0)
        pull.curve_server = True
        pull.curve_secretkey = server_secret
        pull.curve_publickey = server_public
        port = pull.bind_to_random_port("tcp://127.0.0.1")
        expected = server_public if right_server_key else zmq.curve_keypair()[0]
        transport = PushTransport(
            f"tcp://127.0.0.1:{port}",
            linger_ms=0,
            curve=CurveKeys(client_public, client_secret, expected),
        )
        try:
            assert transport.send(b"an order")
            arrived = pull.poll(2000 if right_server_key else 500)
            assert bool(arrived) is right_server_key
            if arrived:
                assert pull.recv() == b"an order"
        finally:
            transport.close()
            pull.close()
            context.term()


class TestPushTransport:
    def test_frames_reach_the_peer_unchanged_and_in_order(self, endpoint: str, peer: Peer):
        """Every frame sent arrives byte for byte, in the order it was sent."""
        transport = PushTransport(endpoint)
        try:
            sent = frames(1000)
            assert all(transport.send(frame) for frame in sent)
            assert peer.frames(1000) == sent
            assert transport.stats().queued == 1000
            assert transport.stats().dropped == 0
        finally:
            transport.close()

    def test_a_full_queue_drops_counts_and_never_raises(self, endpoint: str):
        """With no forwarder, sends beyond the bounds return False and the counters add up."""
        transport = PushTransport(endpoint, hwm=5, linger_ms=0)
        try:
            results = [transport.send(frame) for frame in frames(1000)]
            stats = transport.stats()
            assert all(type(result) is bool for result in results)
            assert stats.queued == results.count(True)
            assert stats.dropped == results.count(False) > 0
            assert stats.queued + stats.dropped == 1000
        finally:
            transport.close()

    def test_drops_are_logged_at_most_once_per_interval_with_their_count(
        self, endpoint: str, caplog: pytest.LogCaptureFixture
    ):
        """A flood of drops logs one warning, and close reports the rest: the counts sum up."""
        caplog.set_level(logging.WARNING, logger="emitter")
        transport = PushTransport(endpoint, hwm=1, linger_ms=0)
        for frame in frames(500):
            transport.send(frame)
        assert len(drop_warnings(caplog)) == 1
        transport.close()
        warnings = drop_warnings(caplog)
        assert len(warnings) == 2
        counted = sum(int(SINCE.search(r.getMessage())[1]) for r in warnings)
        assert counted == transport.stats().dropped

    def test_sends_after_close_are_dropped(self, endpoint: str):
        """A closed transport refuses frames and counts them as dropped."""
        transport = PushTransport(endpoint)
        transport.close()
        assert transport.send(b"late") is False
        assert transport.stats().dropped == 1

    def test_frames_sent_while_the_forwarder_is_away_arrive_when_it_starts(self, endpoint: str):
        """Frames wait in the queue for a forwarder that starts after the app."""
        transport = PushTransport(endpoint, hwm=1000)
        try:
            sent = frames(50)
            assert all(transport.send(frame) for frame in sent)
            late = Peer(endpoint)
            try:
                assert late.frames(50) == sent
            finally:
                late.close()
        finally:
            transport.close()

    def test_a_forwarder_restart_loses_nothing_sent_while_it_was_down(self, endpoint: str):
        """Frames sent between a forwarder's stop and its restart are delivered after it."""
        transport = PushTransport(endpoint, hwm=1000)
        first = Peer(endpoint)
        try:
            transport.send(b"before")
            assert first.frames(1) == [b"before"]
        finally:
            first.close()
        try:
            sent = frames(200)
            assert all(transport.send(frame) for frame in sent)
            second = Peer(endpoint)
            try:
                assert second.frames(200) == sent
            finally:
                second.close()
        finally:
            transport.close()

    def test_the_pump_parks_when_idle_and_the_next_send_wakes_it(self, endpoint: str, peer: Peer):
        """After an idle spell the pump sleeps; a send wakes it long before its safety timeout."""
        transport = PushTransport(endpoint, park_timeout_s=600)
        try:
            transport.send(b"first")
            assert peer.frames(1) == [b"first"]
            wait_until(lambda: transport.parked)
            transport.send(b"after idle")
            assert peer.frames(1, timeout_s=10) == [b"after idle"]
        finally:
            transport.close()

    def test_close_stops_the_pump(self, endpoint: str, peer: Peer):
        """No thread outlives a closed transport."""
        before = pumps()
        transport = PushTransport(endpoint)
        transport.send(b"x")
        peer.frames(1)
        assert pumps() == before + 1
        transport.close()
        assert pumps() == before

    def test_a_closed_transport_is_not_kept_alive_by_fork_or_exit_hooks(self, endpoint: str):
        """The fork and exit registries hold transports weakly, so closed ones are freed."""
        transport = PushTransport(endpoint, linger_ms=0)
        transport.send(b"x")
        transport.close()
        ref = weakref.ref(transport)
        del transport
        gc.collect()
        assert ref() is None


class TestDisabledTransport:
    def test_every_frame_is_dropped_and_counted(self):
        """Publishing switched off by a bad setting drops everything, visibly."""
        transport = DisabledTransport("invalid FORWARDER_ENDPOINT")
        assert [transport.send(frame) for frame in frames(3)] == [False] * 3
        assert transport.stats().queued == 0
        assert transport.stats().dropped == 3


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TestThrottledCounter:
    def test_counts_every_occurrence_but_logs_once_per_interval(
        self, caplog: pytest.LogCaptureFixture
    ):
        """The first occurrence is logged, the rest wait for the interval and carry their count."""
        caplog.set_level(logging.WARNING, logger="emitter")
        clock = FakeClock()
        counter = ThrottledCounter("things failed", interval_s=10, clock=clock)
        for _ in range(5):
            counter.add("boom")
        clock.now += 10
        counter.add("last")
        messages = [r.getMessage() for r in caplog.records if r.name == "emitter"]
        assert messages == [
            "things failed: 1 since the last warning (latest: boom)",
            "things failed: 5 since the last warning (latest: last)",
        ]
        assert counter.total == 6

    def test_flush_reports_what_was_not_yet_logged(self, caplog: pytest.LogCaptureFixture):
        """Occurrences inside the interval are reported by flush, and only once."""
        caplog.set_level(logging.WARNING, logger="emitter")
        counter = ThrottledCounter("things failed", interval_s=10, clock=FakeClock())
        counter.add()
        counter.add()
        counter.add()
        counter.flush()
        counter.flush()
        messages = [r.getMessage() for r in caplog.records if r.name == "emitter"]
        assert messages == [
            "things failed: 1 since the last warning",
            "things failed: 2 since the last warning",
        ]
