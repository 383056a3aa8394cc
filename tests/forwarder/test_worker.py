"""A sink's worker: batching, retries in order, dead letters, drops and the drain deadline."""

from __future__ import annotations

import base64
import json
import random
import threading
import time

import msgspec
import pytest
from structlog.testing import capture_logs

from emitter.contract import decode_envelope, encode_envelope
from forwarder.deadletter import DeadLetters
from forwarder.errors import PermanentSinkError, RetriableSinkError
from forwarder.ops.metrics import BatchLatency
from forwarder.retry import Backoff
from forwarder.settings import Settings
from forwarder.sinks.base import Delivery, InFlight
from forwarder.sinks.memory import MemorySink
from forwarder.stats import Stats
from forwarder.store import Store, open_store
from forwarder.worker import SinkWorker
from harness.events import numbered
from harness.waits import wait_until


class FakeClock:
    """Time that moves only when the worker sleeps, so backoffs cost nothing."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float, wake: threading.Event) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def stats():
    return Stats()


@pytest.fixture
def dead_letters(tmp_path, stats):
    letters = DeadLetters(tmp_path / "state", stats)
    letters.prepare()
    return letters


@pytest.fixture(params=["memory"])
def buffer(request) -> str:
    """Where the worker's events wait; tests of the thread run on both kinds."""
    return str(request.param)


@pytest.fixture
def stores() -> list[Store]:
    return []


@pytest.fixture
def feed(stores):
    """What the receiving thread does with decoded events, on the last worker's store."""

    def put(numbers: range) -> None:
        envelopes = [numbered(n) for n in numbers]
        stores[-1].put([encode_envelope(e) for e in envelopes], envelopes)

    return put


@pytest.fixture
def make_worker(clock, stats, dead_letters, tmp_path, buffer, stores):  # noqa: PLR0917
    def make(sink: MemorySink, **settings: int) -> SinkWorker:
        chosen = Settings(
            **{"retry_base_ms": 100, "retry_max_ms": 1000, **settings},
            state_dir=tmp_path,
            buffer=buffer,
        )
        store, _ = open_store(chosen, [sink.name])
        stores.append(store)
        return SinkWorker(
            sink,
            store,
            chosen,
            stats=stats,
            dead_letters=dead_letters,
            clock=clock,
            backoff=Backoff(100, 1000, rng=random.Random(3)),
        )

    yield make
    for store in stores:
        store.close()


def ids(envelopes) -> list[str]:
    return [e.id for e in envelopes]


class PipelinedSink(MemorySink):
    """A memory sink that answers a batch only when the worker asks for the answer, as a Kafka
    sink does; like it, once a batch failed it fails every later one until deliver() again."""

    batches_in_flight = 3

    def __init__(self) -> None:
        super().__init__()
        self.fenced = False
        self.in_flight = 0
        self.most_in_flight = 0

    def send(self, batch):
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        return Answer(self, list(batch))

    def deliver(self, batch):
        self.fenced = False
        return super().deliver(batch)

    def answer(self, batch) -> Delivery:
        self.in_flight -= 1
        if self.fenced:
            error = RetriableSinkError("not sent: an earlier batch failed")
            return Delivery(failed=dict.fromkeys(range(len(batch)), error))
        delivery = super().deliver(batch)
        self.fenced = any(isinstance(e, RetriableSinkError) for e in delivery.failed.values())
        return delivery


class Answer(InFlight):
    def __init__(self, sink: PipelinedSink, batch) -> None:
        self._sink = sink
        self._batch = batch

    def result(self, *, hurry: bool) -> Delivery:
        return self._sink.answer(self._batch)


class TestDeliver:
    def test_an_acknowledged_batch_is_counted_and_logged_once(self, make_worker):
        """One info line per batch, with the ids at both ends and the attempt."""
        sink = MemorySink()
        worker = make_worker(sink)
        batch = [numbered(n) for n in range(3)]
        with capture_logs() as logs:
            worker.deliver(batch)
        assert sink.delivered == batch
        assert (worker.counters.delivered, worker.counters.batches) == (3, 1)
        [line] = logs
        assert line["event"] == "batch_delivered"
        assert (
            line["sink"],
            line["count"],
            line["first_id"],
            line["last_id"],
            line["attempt"],
        ) == (
            "memory",
            3,
            "ev-000000",
            "ev-000002",
            1,
        )
        assert line["latency_ms"] >= 0

    def test_a_retriable_failure_is_retried_after_a_jittered_backoff(self, make_worker, clock):
        """Each retry waits a full-jitter delay under the doubling ceiling, then sends again."""
        sink = MemorySink()
        sink.fail_next(3)
        worker = make_worker(sink)
        batch = [numbered(n) for n in range(4)]
        with capture_logs() as logs:
            worker.deliver(batch)
        assert sink.delivered == batch
        assert len(clock.sleeps) == 3
        assert all(0 <= s <= c for s, c in zip(clock.sleeps, [0.1, 0.2, 0.4], strict=True))
        retries = [line for line in logs if line["event"] == "sink_retry"]
        assert [(r["attempt"], r["pending"], r["log_level"]) for r in retries] == [
            (1, 4, "warning"),
            (2, 4, "warning"),
            (3, 4, "warning"),
        ]
        assert retries[0]["error"] == "memory sink told to fail"
        assert [line["attempt"] for line in logs if line["event"] == "batch_delivered"] == [4]
        assert worker.counters.retried == 3

    def test_retried_events_keep_their_order_and_go_before_anything_newer(self, make_worker):
        """Failed events of a batch are resent in their order, as one batch, before the next."""
        sink = MemorySink()
        sink.fail_ids(["ev-000001", "ev-000003"], times=2)
        worker = make_worker(sink)
        worker.deliver([numbered(n) for n in range(5)])
        worker.deliver([numbered(5)])
        assert ids(sink.delivered) == [
            "ev-000000",
            "ev-000002",
            "ev-000004",
            "ev-000001",
            "ev-000003",
            "ev-000005",
        ]
        assert sink.batches[1:] == [["ev-000001", "ev-000003"]] * 2 + [["ev-000005"]]

    def test_a_permanent_refusal_is_dead_lettered_without_holding_the_rest(
        self, make_worker, clock, dead_letters
    ):
        """The refused event goes to the dead-letter file at once; the others are delivered."""
        sink = MemorySink()
        sink.fail_ids(["ev-000001"], permanent=True)
        worker = make_worker(sink)
        batch = [numbered(n) for n in range(3)]
        worker.deliver(batch)
        assert ids(sink.delivered) == ["ev-000000", "ev-000002"]
        assert clock.sleeps == []
        assert worker.counters.dead_lettered == 1
        [record] = [json.loads(line) for line in dead_letters.path.read_text().splitlines()]
        assert (record["sink"], record["event_id"]) == ("memory", "ev-000001")
        assert record["reason"] == "memory sink refuses ev-000001"
        assert decode_envelope(base64.b64decode(record["raw"])) == batch[1]

    def test_a_sink_refusing_the_whole_batch_dead_letters_all_of_it(self, make_worker):
        """A PermanentSinkError raised by deliver() applies to every event of the batch."""
        sink = MemorySink()
        sink.fail_next(1, PermanentSinkError("topic authorization failed"))
        worker = make_worker(sink)
        worker.deliver([numbered(n) for n in range(3)])
        assert (worker.counters.dead_lettered, sink.delivered) == (3, [])

    def test_an_unexpected_exception_is_logged_and_retried(self, make_worker):
        """A bug in a sink must not kill its worker: it counts as a retriable failure."""
        sink = MemorySink()
        sink.fail_next(1, KeyError("surprise"))
        worker = make_worker(sink)
        with capture_logs() as logs:
            worker.deliver([numbered(0)])
        assert ids(sink.delivered) == ["ev-000000"]
        [failed] = [line for line in logs if line["event"] == "sink_failed"]
        assert failed["exc_info"] is True
        [retry] = [line for line in logs if line["event"] == "sink_retry"]
        assert "KeyError" in retry["error"]

    def test_retries_stop_at_the_drain_deadline_and_the_rest_is_counted(self, make_worker, clock):
        """On shutdown a dead sink is retried only until the deadline; what is left is reported."""
        sink = MemorySink()
        sink.fail_next(10_000)
        worker = make_worker(sink)
        worker.drain(clock.now + 2.0)
        assert worker.deliver([numbered(n) for n in range(7)]) is False
        assert sink.delivered == []
        assert clock.now == pytest.approx(1002.0)


@pytest.mark.parametrize("buffer", ["disk", "memory"], indirect=True)
class TestThread:
    def test_the_thread_delivers_the_queue_in_batches_and_in_order(self, make_worker, feed, clock):
        """Retried events go out before the next batch is taken from the queue."""
        sink = MemorySink()
        sink.fail_ids(["ev-000001", "ev-000003"])
        worker = make_worker(sink, batch_max=5, batch_linger_ms=0)
        feed(range(10))
        worker.start()
        sink.wait_for(10, timeout=30)
        worker.drain(clock.now + 10)
        assert worker.join(30)
        assert ids(sink.delivered) == [f"ev-{n:06d}" for n in (0, 2, 4, 1, 3, 5, 6, 7, 8, 9)]
        assert sink.batches[0] == [f"ev-{n:06d}" for n in range(5)]

    def test_batches_in_flight_after_a_failed_one_go_again_behind_it(
        self, make_worker, feed, clock
    ):
        """Three batches in flight, the second failing: its failed event and the whole of the
        third and fourth (sent once the first was answered) go again as one, in order."""
        sink = PipelinedSink()
        sink.fail_ids(["ev-000006"])
        worker = make_worker(sink, batch_max=5, batch_linger_ms=0)
        feed(range(20))
        worker.start()
        sink.wait_for(20, timeout=30)
        worker.drain(clock.now + 10)
        assert worker.join(30)
        assert sink.most_in_flight == 3
        assert ids(sink.delivered) == [
            f"ev-{n:06d}" for n in (0, 1, 2, 3, 4, 5, 7, 8, 9, 6, *range(10, 20))
        ]
        assert sink.batches[2] == [f"ev-{n:06d}" for n in (6, *range(10, 20))]
        assert worker.waiting() == 0
        assert worker.counters.delivered == 20

    def test_drain_delivers_what_is_queued_then_ends(self, make_worker, feed, clock):
        """A drained worker finishes its queue before it stops, within the deadline."""
        sink = MemorySink()
        worker = make_worker(sink, batch_max=3)
        worker.start()
        feed(range(20))
        worker.drain(clock.now + 10)
        assert worker.join(30)
        assert ids(sink.delivered) == [f"ev-{n:06d}" for n in range(20)]
        assert worker.waiting() == 0

    def test_events_the_sink_does_not_want_are_finished_without_a_delivery(
        self, make_worker, stores, clock
    ):
        """The store hands out every event; the worker filters, and finishes the rest too."""
        sink = MemorySink(wants=lambda e: e.browser)
        worker = make_worker(sink)
        envelopes = [numbered(n, browser=n % 3 != 0) for n in range(9)]
        stores[-1].put([encode_envelope(e) for e in envelopes], envelopes)
        worker.start()
        sink.wait_for(6, timeout=30)
        worker.drain(clock.now + 10)
        assert worker.join(30)
        assert ids(sink.delivered) == [f"ev-{n:06d}" for n in range(9) if n % 3]
        assert worker.waiting() == 0

    def test_a_sink_that_takes_everything_is_not_asked_about_each_event(
        self, make_worker, stores, clock
    ):
        """Filtering costs a call per event: only a selective sink pays it."""

        class Counting(MemorySink):
            asked = 0

            def wants(self, envelope) -> bool:
                Counting.asked += 1
                return True

        sink = Counting()
        worker = make_worker(sink)
        envelopes = [numbered(n) for n in range(5)]
        stores[-1].put([encode_envelope(e) for e in envelopes], envelopes)
        worker.start()
        sink.wait_for(5, timeout=30)
        worker.drain(clock.now + 10)
        assert worker.join(30)
        assert (sink.selective, Counting.asked) == (False, 0)


@pytest.mark.parametrize("buffer", ["disk"], indirect=True)
class TestStoredDamage:
    def test_an_unreadable_stored_frame_is_dead_lettered_and_counted_by_the_worker(
        self, make_worker, stats, dead_letters, tmp_path, clock
    ):
        """The store reports the damage; the worker records it and delivers the rest."""
        from forwarder.store import BUFFER_FILE, open_disk  # noqa: PLC0415 - one test's setup

        good = [numbered(n) for n in range(2)]
        store, _ = open_disk(tmp_path / BUFFER_FILE, ["memory"], max_bytes=1 << 20)
        store.put([encode_envelope(good[0]), b"\xc1 no event", encode_envelope(good[1])], good)
        store.close()
        sink = MemorySink()
        worker = make_worker(sink)
        worker.start()
        sink.wait_for(2, timeout=30)
        worker.drain(clock.now + 10)
        assert worker.join(30)
        assert (worker.counters.dead_lettered, stats.buffer_damaged) == (1, 1)
        [record] = [json.loads(line) for line in dead_letters.path.read_text().splitlines()]
        assert base64.b64decode(record["raw"]) == b"\xc1 no event"
        assert (record["sink"], record["reason"][:26]) == ("memory", "unreadable in the buffer: ")


class Recording:
    """A store whose reader writes down how long each take was allowed to wait."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.waits: list[float] = []

    def reader(self, sink: str):
        store, waits = self._store, self.waits

        class RecordingReader:
            def take(self, limit: int, wait_s: float):
                waits.append(wait_s)
                return store.reader(sink).take(limit, wait_s)

            def __getattr__(self, name: str):
                return getattr(store.reader(sink), name)

        return RecordingReader()


class SlowSink(MemorySink):
    """A sink whose every delivery takes `seconds` on the test's clock."""

    def __init__(self, clock: FakeClock, seconds: float) -> None:
        super().__init__()
        self._clock = clock
        self._seconds = seconds

    def deliver(self, batch):
        self._clock.now += self._seconds
        return super().deliver(batch)


class TestReporting:
    def test_the_batch_line_gives_latency_and_age_in_milliseconds(
        self, clock, stats, dead_letters, tmp_path
    ):
        """Latency is the sink's time for the batch on the worker's clock, age that of the
        oldest event of the batch; the latency histogram gets the same seconds."""
        settings = Settings(state_dir=tmp_path, buffer="memory")
        store, _ = open_store(settings, ["memory"])
        latency = BatchLatency()
        worker = SinkWorker(
            SlowSink(clock, 0.0123456),
            store,
            settings,
            stats=stats,
            dead_letters=dead_letters,
            clock=clock,
            latency=latency,
        )
        old = msgspec.structs.replace(numbered(0), ts=1_000_000_000)
        try:
            with capture_logs() as logs:
                before = time.time_ns()
                worker.deliver([old, numbered(1)])
                after = time.time_ns()
        finally:
            store.close()
        [line] = logs
        assert line["latency_ms"] == 12.346
        assert (before - old.ts) / 1e6 <= line["age_ms"] <= (after - old.ts) / 1e6
        [histogram] = latency.collect()
        [total] = [s for s in histogram.samples if s.name.endswith("_sum")]
        assert (total.labels["sink"], total.value) == ("memory", pytest.approx(0.0123456))
        assert [s.value for s in histogram.samples if s.name.endswith("_count")] == [1]

    def test_retries_wait_the_backoffs_delays_in_turn_and_say_so(self, make_worker, clock):
        """The n-th retry sleeps the backoff's n-th delay (drawn from the same source), and its
        line gives that delay in milliseconds, the sink and what failed."""
        sink = MemorySink()
        sink.fail_next(3)
        worker = make_worker(sink)
        reference = Backoff(100, 1000, rng=random.Random(3))
        expected = [reference.delay_s(n) for n in range(3)]
        with capture_logs() as logs:
            worker.deliver([numbered(0)])
        assert clock.sleeps == expected
        retries = [line for line in logs if line["event"] == "sink_retry"]
        assert [r["delay_ms"] for r in retries] == [round(d * 1000, 3) for d in expected]
        assert {r["sink"] for r in retries} == {"memory"}

    def test_a_sink_still_failing_is_reported_with_its_first_error_until_it_recovers(
        self, make_worker, clock
    ):
        """The stats line shows since when a sink has been retrying and the error of the first
        event still pending; both clear once the batch is through."""
        sink = MemorySink()
        sink.fail_ids(["ev-000002", "ev-000001"], times=10_000)
        worker = make_worker(sink)
        worker.drain(clock.now + 5)
        started = time.monotonic()
        assert worker.deliver([numbered(n) for n in range(3)]) is False
        assert worker.counters.last_error == "memory sink failed ev-000001 for now"
        assert started <= worker.counters.retrying_since <= time.monotonic()
        worker.drain(clock.now + 5)
        assert worker.deliver([numbered(3)]) is True
        assert worker.counters.retrying_since is None
        assert (worker.counters.delivered, worker.counters.batches) == (2, 2)

    def test_an_unexpected_exception_is_logged_with_the_sink_and_the_batch_size(self, make_worker):
        sink = MemorySink()
        sink.fail_next(1, KeyError("surprise"))
        worker = make_worker(sink)
        with capture_logs() as logs:
            worker.deliver([numbered(0), numbered(1)])
        [failed] = [line for line in logs if line["event"] == "sink_failed"]
        assert (failed["sink"], failed["count"], failed["log_level"]) == ("memory", 2, "error")
        assert ids(sink.delivered) == ["ev-000000", "ev-000001"]

    @pytest.mark.parametrize("buffer", ["disk"], indirect=True)
    def test_damage_adds_to_what_the_sink_dead_lettered_before(
        self, make_worker, stats, dead_letters, tmp_path, clock
    ):
        """Counters add up: a refusal, then a damaged stored frame, make two."""
        from forwarder.store import BUFFER_FILE, open_disk  # noqa: PLC0415 - one test's setup

        store, _ = open_disk(tmp_path / BUFFER_FILE, ["memory"], max_bytes=1 << 20)
        store.put([b"\xc1 no event", encode_envelope(numbered(9))], [numbered(9)])
        store.close()
        sink = MemorySink()
        sink.fail_ids(["ev-000000"], permanent=True)
        worker = make_worker(sink)
        worker.deliver([numbered(0)])
        assert worker.counters.dead_lettered == 1
        worker.start()
        wait_until(
            lambda: worker.counters.dead_lettered == 2, what="the damaged frame dead-lettered"
        )
        worker.drain(clock.now + 10)
        assert worker.join(30)
        assert stats.buffer_damaged == 1
        records = [json.loads(line) for line in dead_letters.path.read_text().splitlines()]
        assert [(r["sink"], r["reason"][:10]) for r in records] == [
            ("memory", "memory sin"),
            ("memory", "unreadable"),
        ]


class TestThreadWaits:
    def test_idle_it_waits_a_while_for_events_and_a_drained_worker_does_not_wait(
        self, clock, stats, dead_letters, tmp_path
    ):
        """An idle worker waits 0.2 s per look at its backlog, then lingers the configured
        time for more; once drained, it takes what is there without waiting."""
        settings = Settings(state_dir=tmp_path, buffer="memory", batch_linger_ms=50)
        store, _ = open_store(settings, ["memory"])
        recording = Recording(store)
        sink = MemorySink()
        worker = SinkWorker(
            sink, recording, settings, stats=stats, dead_letters=dead_letters, clock=clock
        )
        try:
            worker.start()
            wait_until(lambda: len(recording.waits) >= 2, what="two idle looks at the backlog")
            store.put([encode_envelope(numbered(0))], [numbered(0)])
            sink.wait_for(1, timeout=30)
            store.put([encode_envelope(numbered(1))], [numbered(1)])
            worker.drain(clock.now + 10)
            assert worker.join(30)
        finally:
            store.close()
        assert ids(sink.delivered) == ["ev-000000", "ev-000001"]
        assert recording.waits[:2] == [0.2, 0.2]
        assert recording.waits.count(pytest.approx(0.05)) == 2
        assert recording.waits[-1] == 0
        assert [w for w in recording.waits if w not in (0.2, 0)] == [pytest.approx(0.05)] * 2

    def test_the_thread_is_a_daemon_named_after_its_sink(self, make_worker, clock):
        """A worker stuck in a sink call never holds the interpreter at exit; the name shows
        in thread dumps."""
        worker = make_worker(MemorySink("kafka"))
        worker.start()
        try:
            [thread] = [t for t in threading.enumerate() if t.name == "sink-kafka"]
            assert thread.daemon
        finally:
            worker.drain(clock.now)
            assert worker.join(30)

    def test_join_with_no_time_left_returns_at_once(self, make_worker, clock):
        """A stop whose deadline has passed does not wait: join(0) and join(-1) on a running
        worker take less time than a 0.3 s join measured in the same test."""
        worker = make_worker(MemorySink())
        worker.start()
        try:
            started = time.monotonic()
            assert worker.join(0.3) is False
            waited = time.monotonic() - started
            started = time.monotonic()
            assert worker.join(0) is False
            assert worker.join(-1) is False
            assert time.monotonic() - started < waited
        finally:
            worker.drain(clock.now)
            assert worker.join(30)

    def test_a_drain_wakes_a_worker_waiting_out_a_long_backoff(self, stats, dead_letters, tmp_path):
        """On the real clock: a sink down, a backoff of a minute, and the stop request still
        ends the worker by its drain deadline, the event kept for the next start."""
        settings = Settings(
            state_dir=tmp_path, buffer="memory", retry_base_ms=60_000, retry_max_ms=60_000
        )
        store, _ = open_store(settings, ["memory"])
        sink = MemorySink()
        sink.fail_next(10_000)
        backoff = Backoff(60_000, 60_000, rng=random.Random(1))
        worker = SinkWorker(
            sink, store, settings, stats=stats, dead_letters=dead_letters, backoff=backoff
        )
        try:
            store.put([encode_envelope(numbered(0))], [numbered(0)])
            worker.start()
            wait_until(lambda: worker.counters.retried == 1, what="the first retry")
            assert backoff.delay_s(0) > 30
            worker.drain(time.monotonic() + 0.5)
            assert worker.join(30)
            assert (sink.delivered, worker.waiting()) == ([], 1)
        finally:
            store.close()


class TestSettings:
    def test_without_a_backoff_the_settings_bound_each_retry(
        self, clock, stats, dead_letters, tmp_path
    ):
        """RETRY_BASE_MS and RETRY_MAX_MS set the jittered delays when no backoff is given."""
        settings = Settings(state_dir=tmp_path, buffer="memory", retry_base_ms=10, retry_max_ms=20)
        store, _ = open_store(settings, ["memory"])
        sink = MemorySink()
        sink.fail_next(6)
        worker = SinkWorker(
            sink, store, settings, stats=stats, dead_letters=dead_letters, clock=clock
        )
        try:
            worker.deliver([numbered(0)])
        finally:
            store.close()
        assert len(clock.sleeps) == 6
        assert all(0 < delay <= 0.02 for delay in clock.sleeps)
        assert all(delay <= 0.01 for delay in clock.sleeps[:1])

    def test_the_stats_line_reads_the_sinks_queue_and_oldest_age(
        self, clock, stats, dead_letters, tmp_path
    ):
        """The worker registers its sink by name with what waits for it and the oldest age."""
        settings = Settings(state_dir=tmp_path, buffer="memory")
        store, _ = open_store(settings, ["kafka"])
        SinkWorker(MemorySink("kafka"), store, settings, stats=stats, dead_letters=dead_letters)
        try:
            store.put(
                [encode_envelope(numbered(n)) for n in range(3)], [numbered(n) for n in range(3)]
            )
            snapshot = stats.snapshot().sinks["kafka"]
            assert snapshot.waiting == 3
            assert snapshot.oldest_age_s == pytest.approx(
                store.reader("kafka").oldest_age_s(), abs=1
            )
            assert snapshot.oldest_age_s is not None
        finally:
            store.close()
