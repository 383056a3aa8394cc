"""The transport queues without blocking, keeps frames across forwarder restarts, counts drops."""

from __future__ import annotations

import ctypes
import gc
import json
import logging
import re
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import zmq

from emitter.config import CurveKeys
from emitter.transport import (
    CLOSE_GRACE_S,
    DisabledTransport,
    PushTransport,
    ThrottledCounter,
    TransportStats,
    describe_error,
    zmq_hwm,
)
from harness.waits import wait_until
from tests.emitter.conftest import Peer

ROOT = Path(__file__).resolve().parents[2]

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
        assert transport.model == "threads"
        transport.close()
        wait_until(lambda: pumps() == before)
        assert transport.pump_ident is None

    def test_a_closed_transport_is_not_kept_alive_by_fork_or_exit_hooks(self, endpoint: str):
        """The fork and exit registries hold transports weakly, so closed ones are freed."""
        transport = PushTransport(endpoint, linger_ms=0)
        transport.send(b"x")
        transport.close()
        ref = weakref.ref(transport)
        del transport
        gc.collect()
        assert ref() is None


def run_module(module: str, *args: str, timeout: float = 60) -> dict[str, Any]:
    """`python -m module args` in a fresh interpreter; its last stdout line, parsed as JSON."""
    result = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    parsed: dict[str, Any] = json.loads(result.stdout.splitlines()[-1])
    parsed["stderr"] = result.stderr
    return parsed


@contextmanager
def slow_reader(endpoint: str, per_frame_us: int) -> Iterator[subprocess.Popen[str]]:
    """tests.support.slow_reader started, and killed by its pid however the test ends."""
    with subprocess.Popen(
        [sys.executable, "-m", "tests.support.slow_reader", endpoint, str(per_frame_us)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as reader:
        try:
            assert reader.stdout is not None
            assert reader.stdout.readline().strip() == "ready"
            yield reader
        finally:
            reader.kill()


def frames_read(reader: subprocess.Popen[str]) -> list[bytes]:
    """Everything the slow reader received, once it saw its stdin close and went quiet."""
    out, _ = reader.communicate(timeout=60)
    return [frame.encode() for frame in json.loads(out)]


class TestClose:
    def test_every_accepted_frame_arrives_when_the_reader_keeps_up_within_the_linger(
        self, endpoint: str
    ):
        """4 threads x 5,000 frames, a reader at 30 us a frame, close(): none lost, none unsent."""
        with slow_reader(endpoint, per_frame_us=30) as reader:
            transport = PushTransport(endpoint, linger_ms=20_000)
            accepted: list[list[bytes]] = [[] for _ in range(4)]
            start = threading.Barrier(4)

            def publish(thread: int) -> None:
                start.wait()
                for seq in range(5000):
                    frame = f"{thread}:{seq:04d}".encode()
                    if transport.send(frame):
                        accepted[thread].append(frame)

            workers = [threading.Thread(target=publish, args=(t,)) for t in range(4)]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
            transport.close()
            received = frames_read(reader)
        stats = transport.stats()
        assert stats.unsent == 0
        assert stats.queued == sum(map(len, accepted)) == len(received)
        for thread, sent in enumerate(accepted):
            assert [f for f in received if f.startswith(b"%d:" % thread)] == sent

    def test_what_the_linger_cannot_hand_over_is_counted_as_unsent_and_logged_once(
        self, endpoint: str, caplog: pytest.LogCaptureFixture
    ):
        """With nobody reading, close() returns after the linger; the rest is unsent, not queued."""
        caplog.set_level(logging.WARNING, logger="emitter")
        linger_s = 0.5
        transport = PushTransport(endpoint, hwm=100, linger_ms=int(linger_s * 1000))
        assert all(transport.send(frame) for frame in frames(100))
        wait_until(lambda: transport.parked)  # all 100 in ZeroMQ's queue, which is now full
        results = [transport.send(frame) for frame in frames(200, start=100)]
        assert results == [True] * 100 + [False] * 100
        started = time.monotonic()
        transport.close()
        took = time.monotonic() - started
        assert linger_s <= took < linger_s + CLOSE_GRACE_S
        assert transport.stats() == TransportStats(queued=100, dropped=100, unsent=100)
        messages = [r.getMessage() for r in caplog.records]
        assert [m for m in messages if "counted as unsent" in m] == [
            "events not handed to the forwarder within EMITTER_LINGER_MS=500 are lost: 100 "
            "(counted as unsent)"
        ]
        assert [m for m in messages if "ZeroMQ held" in m] == [
            "the forwarder did not take every event ZeroMQ held within EMITTER_LINGER_MS=500: "
            "up to 100 more are lost"
        ]

    def test_close_without_any_event_returns_at_once(self, endpoint: str):
        """A transport that never sent opens no socket and has nothing to wait for."""
        transport = PushTransport(endpoint, linger_ms=60_000)
        started = time.monotonic()
        transport.close()
        assert time.monotonic() - started < 1.0
        assert transport.stats() == TransportStats(0, 0, 0, 0)


@pytest.mark.parametrize(
    ("model", "detected"),
    [
        ("eventlet", "eventlet"),
        ("gevent", "gevent"),
        ("threads", "threads"),
        ("asyncio", "threads"),
    ],
)
class TestWorkerModels:
    def test_other_work_keeps_running_while_the_queue_overflows_and_while_closing(
        self, endpoint: str, model: str, detected: str
    ):
        """The hub (or event loop) keeps ticking; close() takes the linger, and no longer."""
        linger_s = 1.0
        result = run_module(
            "tests.support.patched_process", model, endpoint, "50", str(int(linger_s * 1000))
        )
        stats = result["stats"]
        assert result["model"] == detected
        assert result["flood_ticks_per_s"] >= 0.5 * result["idle_ticks_per_s"]
        assert result["close_ticks_per_s"] >= 0.5 * result["idle_ticks_per_s"]
        assert linger_s <= result["close_s"] < linger_s + CLOSE_GRACE_S
        assert stats["dropped"] > 0
        assert stats["unsent"] > 0
        assert stats["queued"] + stats["dropped"] + stats["unsent"] == result["offered"]
        assert result["stderr"].count("counted as unsent") == 1


class TestByteLimits:
    def test_an_event_over_the_size_limit_is_refused_counted_and_warned_about_once(
        self, endpoint: str, peer: Peer, caplog: pytest.LogCaptureFixture
    ):
        """A frame above max_event_bytes returns False, is counted apart, and is never sent."""
        caplog.set_level(logging.WARNING, logger="emitter")
        transport = PushTransport(endpoint, max_event_bytes=1024, max_bytes=1 << 20)
        try:
            assert transport.send(b"x" * 1025) is False
            assert transport.send(b"x" * 1024) is True
            assert [transport.send(b"y" * 5000) for _ in range(100)] == [False] * 100
            assert peer.frames(1) == [b"x" * 1024]
            assert peer.nothing_more()
            assert transport.stats() == TransportStats(queued=1, dropped=0, too_large=101)
        finally:
            transport.close()
        warnings = [r.getMessage() for r in caplog.records if "larger than" in r.getMessage()]
        assert warnings == [
            "events refused: larger than the 1024-byte limit (EMITTER_MAX_EVENT_BYTES): "
            "1 since the last warning (latest: 1025 bytes)",
            "events refused: larger than the 1024-byte limit (EMITTER_MAX_EVENT_BYTES): "
            "100 since the last warning (latest: 5000 bytes)",
        ]

    def test_the_queue_holds_no_more_bytes_than_its_limit(self, endpoint: str):
        """With the forwarder away, large frames are accepted only up to the byte limit."""
        frame_bytes, limit = 100_000, 4 << 20
        transport = PushTransport(
            endpoint, hwm=100_000, max_bytes=limit, max_event_bytes=256 << 10, linger_ms=0
        )
        try:
            results = [transport.send(b"z" * frame_bytes) for _ in range(1000)]
            stats = transport.stats()
            assert 0 < results.count(True) * frame_bytes <= limit
            assert results.count(True) > (limit // frame_bytes) // 2
            assert stats.queued == results.count(True)
            assert stats.dropped == results.count(False)
        finally:
            transport.close()

    def test_max_bytes_must_hold_several_of_the_largest_events(self, endpoint: str):
        """A byte limit that could not hold eight of the largest events is a programming error."""
        with pytest.raises(ValueError, match="must hold 8 events"):
            PushTransport(endpoint, max_bytes=1 << 20, max_event_bytes=256 << 10)

    @pytest.mark.parametrize(
        ("event_bytes", "count"), [(200 << 10, 2000), (8 << 20, 50)], ids=["flood", "oversize"]
    )
    def test_a_flood_of_large_events_keeps_the_process_within_the_byte_limit(
        self, endpoint: str, event_bytes: int, count: int
    ):
        """Measured in a fresh process: memory grows by the byte limit at most.

        The limit counts the frames' bytes; the process also pays for their objects and the
        allocator's page rounding, a few percent here, hence the 10% allowance. Without the
        byte bound the same flood took 398 MiB; without counting ZeroMQ's share, 22 MiB.
        """
        limit, max_event = 16 << 20, 256 << 10
        result = run_module(
            "tests.support.memory_flood",
            endpoint,
            str(limit),
            str(max_event),
            str(event_bytes),
            str(count),
        )
        stats = result["stats"]
        grown = (result["peak_kib"] - result["before_kib"]) * 1024
        assert grown <= limit * 1.1
        assert result["accepted"] * event_bytes <= limit
        assert stats["queued"] == result["accepted"] + 1
        if event_bytes > max_event:
            assert stats["too_large"] == count
        else:
            assert stats["dropped"] == count - result["accepted"] > 0


class PumpKilledError(Exception):
    """Raised inside the pump thread by the test, as an unexpected error would be."""


def kill(ident: int) -> None:
    affected = ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(ident), ctypes.py_object(PumpKilledError)
    )
    assert affected == 1


class TestPumpFailures:
    def test_a_killed_pump_is_restarted_by_the_next_send_and_its_cause_logged_once(
        self, endpoint: str, peer: Peer, caplog: pytest.LogCaptureFixture
    ):
        """Frames sent after the pump died arrive, in order; one warning names the real cause."""
        caplog.set_level(logging.WARNING, logger="emitter")
        transport = PushTransport(endpoint, park_timeout_s=600)
        try:
            before = frames(100)
            assert all(transport.send(frame) for frame in before)
            assert peer.frames(100) == before
            wait_until(lambda: transport.parked)
            first_pump = transport.pump_ident
            assert first_pump is not None
            kill(first_pump)
            after = frames(100, start=100)
            for frame in after:
                assert transport.send(frame)
                time.sleep(0.001)
            assert peer.frames(100) == after
            assert transport.pump_ident is not None  # a new pump (idents are reused)
            assert transport.stats() == TransportStats(queued=200, dropped=0)
        finally:
            transport.close()
        causes = [r.getMessage() for r in caplog.records if "sending thread" in r.getMessage()]
        assert causes == [
            "the emitter's sending thread stopped (the next publish starts a new one): "
            "1 since the last warning (latest: PumpKilledError)"
        ]

    def test_a_pump_that_cannot_run_is_named_as_the_reason_for_drops(
        self, tmp_path, caplog: pytest.LogCaptureFixture
    ):
        """When the socket cannot be opened, the drop warning blames it, not the forwarder."""
        caplog.set_level(logging.WARNING, logger="emitter")
        unusable = f"ipc://{tmp_path}/{'d' * 120}/events.sock"
        transport = PushTransport(unusable, hwm=10, linger_ms=0)
        try:
            assert all(transport.send(frame) for frame in frames(10))
            wait_until(lambda: not transport.pump_ident)
            assert transport.send(b"one too many") is False
        finally:
            transport.close()
        drops = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
        assert len(drops) == 1
        assert "sending thread is not running" in drops[0]
        assert "ZMQError" in drops[0]
        assert "forwarder running" not in drops[0]
        assert transport.stats().unsent == 10


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


class TestSmallParts:
    def test_an_error_is_described_by_its_type_and_message_within_200_characters(self):
        assert describe_error(ValueError("bad port")) == "ValueError: bad port"
        assert describe_error(ValueError()) == "ValueError"
        assert describe_error(OSError("x" * 300)) == ("OSError: " + "x" * 300)[:200]

    def test_an_error_whose_text_itself_fails_is_described_by_its_type(self):
        class BrokenError(Exception):
            def __str__(self) -> str:
                raise RuntimeError("no text")

        assert describe_error(BrokenError()) == "BrokenError"

    @pytest.mark.parametrize(
        ("hwm", "max_bytes", "max_event_bytes", "expected"),
        [
            (10_000, 1_000_000, 1_000, 498),
            (100, 1_000_000, 1_000, 100),
            (10, 1_000, 1_000, 1),
        ],
    )
    def test_zeromq_holds_frames_of_half_the_byte_budget_at_most(
        self, hwm, max_bytes, max_event_bytes, expected
    ):
        """Half the budget in frames of the largest size, less the two in flight, at least one."""
        assert zmq_hwm(hwm, max_bytes, max_event_bytes) == expected

    def test_each_kind_of_drop_is_named_in_its_warning(
        self, endpoint: str, caplog: pytest.LogCaptureFixture
    ):
        """A full queue blames the forwarder; a closed or disabled publisher says so."""
        caplog.set_level(logging.WARNING, logger="emitter")
        transport = PushTransport(endpoint, hwm=10, linger_ms=0)
        assert all(transport.send(frame) for frame in frames(10))
        wait_until(lambda: transport.parked)  # ZeroMQ's queue is full; ours takes as many again
        assert all(transport.send(frame) for frame in frames(10, start=10))
        assert transport.send(b"one too many") is False
        transport.close()
        assert transport.send(b"after close") is False
        transport.close()
        disabled = DisabledTransport("invalid FORWARDER_ENDPOINT")
        assert disabled.send(b"x") is False
        disabled.close()
        messages = [r.getMessage() for r in caplog.records]
        for expected in (
            "events dropped: the queue for the forwarder is full; the forwarder is not taking"
            " events (is it running?): 1 since the last warning",
            "events dropped: the publisher is closed: 1 since the last warning",
            "events dropped: publishing is disabled (invalid FORWARDER_ENDPOINT): 1 since the"
            " last warning",
        ):
            assert expected in messages, messages
