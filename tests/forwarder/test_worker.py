"""A sink's worker: batching, retries in order, dead letters, drops and the drain deadline."""

from __future__ import annotations

import base64
import json
import random
import threading

import pytest
from structlog.testing import capture_logs

from emitter.contract import decode_envelope, encode_envelope
from forwarder.deadletter import DeadLetters
from forwarder.errors import PermanentSinkError, RetriableSinkError
from forwarder.retry import Backoff
from forwarder.settings import Settings
from forwarder.sinks.base import Delivery, InFlight
from forwarder.sinks.memory import MemorySink
from forwarder.stats import Stats
from forwarder.store import Store, open_store
from forwarder.worker import SinkWorker
from harness.events import numbered


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
