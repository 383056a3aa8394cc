"""The pipeline in-process: a real PULL socket fed by real PUSH sockets, memory sinks at the end."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace

import pytest
from structlog.testing import capture_logs

from emitter.contract import encode_envelope
from forwarder.errors import StartupError
from forwarder.service import Forwarder
from forwarder.settings import Settings
from forwarder.sinks.base import Sink
from forwarder.sinks.memory import MemorySink
from forwarder.source import Source
from forwarder.store import BUFFER_FILE, open_disk
from harness.events import numbered, push_frames
from harness.waits import wait_until
from tests.support.frames import GARBAGE

Start = Callable[..., Forwarder]


@pytest.fixture
def settings(tmp_path):
    return Settings(
        modes=(),
        endpoint=f"ipc://{tmp_path}/run/events.sock",
        state_dir=tmp_path / "state",
        batch_linger_ms=1,
        retry_base_ms=10,
        retry_max_ms=50,
        shutdown_timeout_s=10,
        stats_interval_s=0,
    )


@contextmanager
def running(settings: Settings, sinks: Sequence[Sink]) -> Iterator[Forwarder]:
    """The forwarder's run() in a thread, stopped and joined whatever the test did."""
    forwarder = Forwarder(settings, sinks)
    thread = threading.Thread(target=forwarder.run, name="forwarder-under-test")
    thread.start()
    try:
        yield forwarder
    finally:
        forwarder.stop()
        thread.join(60)
        assert not thread.is_alive(), "run() did not return after stop()"


def frames(numbers: range, **kwargs) -> list[bytes]:
    return [encode_envelope(numbered(n, **kwargs)) for n in numbers]


def ids(envelopes) -> list[str]:
    return [e.id for e in envelopes]


class TestForwarder:
    def test_valid_events_are_delivered_once_and_in_order(self, settings):
        """What the emitter pushes reaches the sink exactly once, in push order."""
        sink = MemorySink()
        with running(settings, [sink]) as forwarder:
            push_frames(settings.endpoint, frames(range(1000)))
            delivered = sink.wait_for(1000, timeout=30)
        assert ids(delivered) == [f"ev-{n:06d}" for n in range(1000)]
        assert forwarder.stats.received == 1000
        assert sink.closed

    def test_garbage_between_valid_frames_is_dead_lettered_and_counted(self, settings):
        """Random bytes, cut msgpack, a future schema and an empty frame do not stop the rest."""
        sink = MemorySink()
        pushed = []
        for n, bad in enumerate(GARBAGE):
            pushed += [*frames(range(n * 10, n * 10 + 10)), bad]
        with running(settings, [sink]) as forwarder:
            push_frames(settings.endpoint, pushed)
            delivered = sink.wait_for(40, timeout=30)
            wait_until(lambda: forwarder.stats.decode_failures == len(GARBAGE))
        assert ids(delivered) == [f"ev-{n:06d}" for n in range(40)]
        records = [
            json.loads(line)
            for line in (settings.state_dir / "dead-letters.jsonl").read_text().splitlines()
        ]
        assert [base64.b64decode(r["raw"]) for r in records] == GARBAGE
        assert {r["sink"] for r in records} == {None}
        assert [r["event_id"] for r in records] == [None, None, "ev-next-schema", None]
        assert forwarder.stats.received == 40 + len(GARBAGE)

    def test_retriable_failures_are_retried_without_reordering(self, settings):
        """A sink failing for a while receives everything, in order, once it recovers."""
        sink = MemorySink()
        sink.fail_next(5)
        sink.fail_ids(["ev-000150", "ev-000151"], times=3)
        with running(settings, [sink]) as forwarder, capture_logs() as logs:
            push_frames(settings.endpoint, frames(range(300)))
            delivered = sink.wait_for(300, timeout=30)
        assert sorted(ids(delivered)) == [f"ev-{n:06d}" for n in range(300)]
        before, after = ids(delivered[:150]), ids(delivered[150:])
        assert before == [f"ev-{n:06d}" for n in range(150)]
        assert after.index("ev-000150") < after.index("ev-000151")
        assert forwarder.stats.snapshot().sinks["memory"].retried >= 8
        assert len([line for line in logs if line["event"] == "sink_retry"]) >= 8

    def test_permanent_refusals_are_dead_lettered_without_blocking_the_rest(self, settings):
        """Refused events go to the dead-letter file; every other event is delivered in order."""
        sink = MemorySink()
        refused = ["ev-000010", "ev-000077"]
        sink.fail_ids(refused, permanent=True)
        with running(settings, [sink]) as forwarder:
            push_frames(settings.endpoint, frames(range(100)))
            delivered = sink.wait_for(98, timeout=30)
            wait_until(lambda: forwarder.stats.sinks["memory"].dead_lettered == 2)
        assert ids(delivered) == [f"ev-{n:06d}" for n in range(100) if f"ev-{n:06d}" not in refused]
        records = [
            json.loads(line)
            for line in (settings.state_dir / "dead-letters.jsonl").read_text().splitlines()
        ]
        assert [(r["sink"], r["event_id"]) for r in records] == [("memory", i) for i in refused]

    def test_a_stuck_or_failing_sink_never_delays_another(self, settings):
        """Each sink has its own queue and thread: one hanging, one failing, one gets everything."""
        stuck, failing, healthy = MemorySink("stuck"), MemorySink("failing"), MemorySink("healthy")
        stuck.pause()
        failing.fail_next(1_000_000)
        try:
            with running(replace(settings, shutdown_timeout_s=1), [stuck, failing, healthy]):
                push_frames(settings.endpoint, frames(range(200)))
                delivered = healthy.wait_for(200, timeout=30)
                assert stuck.delivered == failing.delivered == []
        finally:
            stuck.resume()
        assert ids(delivered) == [f"ev-{n:06d}" for n in range(200)]

    def test_a_sink_only_gets_the_events_it_wants(self, settings):
        """The browser sink skips events the browser never saw; Kafka takes them all."""
        browser = MemorySink("browser", wants=lambda e: e.browser)
        everything = MemorySink("everything")
        pushed = [encode_envelope(numbered(n, browser=n % 3 != 0)) for n in range(30)]
        with running(settings, [browser, everything]):
            push_frames(settings.endpoint, pushed)
            everything.wait_for(30, timeout=30)
            browser.wait_for(20, timeout=30)
        assert ids(browser.delivered) == [f"ev-{n:06d}" for n in range(30) if n % 3 != 0]

    def test_a_full_memory_queue_drops_newest_and_counts_them(self, settings):
        """While a sink hangs its queue fills; later events are dropped and counted."""
        sink = MemorySink()
        sink.pause()
        small = replace(settings, buffer="memory", queue_max=5, batch_max=1)
        with running(small, [sink]) as forwarder:
            push_frames(settings.endpoint, frames(range(50)))
            wait_until(lambda: forwarder.stats.received == 50)
            sink.resume()
            counters = forwarder.stats.sinks["memory"]
            wait_until(lambda: counters.delivered + counters.dropped == 50)
        assert counters.dropped >= 50 - 5 - 2
        assert ids(sink.delivered) == sorted(ids(sink.delivered))

    @pytest.mark.parametrize("when_full", ["drop_newest", "drop_oldest"])
    def test_a_full_disk_buffer_applies_its_policy_counts_and_recovers(self, settings, when_full):
        """Room for ten events: the policy says which go, each is counted, and flow resumes."""
        sink = MemorySink()
        sink.pause()
        room = 10 * len(frames(range(1))[0])
        full = replace(settings, buffer_max_bytes=room, when_full=when_full, batch_max=1)
        with capture_logs() as logs, running(full, [sink]) as forwarder:
            push_frames(settings.endpoint, frames(range(50)))
            wait_until(lambda: forwarder.stats.received == 50)
            sink.resume()
            counters = forwarder.stats.sinks["memory"]
            wait_until(lambda: counters.delivered + counters.dropped == 50)
            push_frames(settings.endpoint, frames(range(50, 55)))
            wait_until(lambda: counters.delivered + counters.dropped == 55)
        delivered = [int(i.removeprefix("ev-")) for i in ids(sink.delivered)]
        assert delivered == sorted(delivered)
        assert delivered[-5:] == list(range(50, 55))
        assert 50 - 10 - 1 <= counters.dropped <= 50 - 10 + 1
        if when_full == "drop_newest":
            assert delivered[:-5] == list(range(len(delivered) - 5))
        else:
            assert 49 in delivered
        [warning, *_] = [line for line in logs if line["event"] == "event_dropped"]
        assert (warning["reason"], warning["sink"]) == ("buffer_full", "memory")

    def test_at_start_what_the_buffer_holds_goes_first_and_a_bad_row_is_dead_lettered(
        self, settings
    ):
        """Events left by the previous run, in order, then new ones; a row that no longer decodes
        is set aside instead of stopping the start or looping on it."""
        settings.state_dir.mkdir(parents=True)
        left, _ = open_disk(settings.state_dir / BUFFER_FILE, ["memory"], max_bytes=1 << 20)
        envelopes = [numbered(n) for n in range(10)]
        left.put([*frames(range(5)), b"\xc1 not an event", *frames(range(5, 10))], envelopes)
        left.close()
        sink = MemorySink()
        with capture_logs() as logs, running(settings, [sink]) as forwarder:
            push_frames(settings.endpoint, frames(range(10, 20)))
            sink.wait_for(20, timeout=30)
        assert ids(sink.delivered) == [f"ev-{n:06d}" for n in range(20)]
        assert forwarder.stats.buffer_damaged == 1
        [started] = [line for line in logs if line["event"] == "forwarder_started"]
        assert started["waiting"] == {"memory": 11}
        dead = (settings.state_dir / "dead-letters.jsonl").read_text().splitlines()
        [letter] = [json.loads(line) for line in dead]
        assert letter["reason"].startswith("unreadable in the buffer")
        assert letter["sink"] == "memory"
        assert forwarder.stats.sinks["memory"].dead_lettered == 1
        assert base64.b64decode(letter["raw"]) == b"\xc1 not an event"

    def test_stop_delivers_what_is_held_before_returning(self, settings):
        """Events queued at stop() are delivered, retries included, within the timeout."""
        sink = MemorySink()
        sink.pause()
        sink.fail_next(3)
        with capture_logs() as logs, running(settings, [sink]) as forwarder:
            push_frames(settings.endpoint, frames(range(500)))
            wait_until(lambda: forwarder.stats.received == 500)
            forwarder.stop()
            sink.resume()
        assert ids(sink.delivered) == [f"ev-{n:06d}" for n in range(500)]
        [stopped] = [line for line in logs if line["event"] == "forwarder_stopped"]
        assert stopped["waiting"] == {"memory": 0}
        assert stopped["received"] == 500

    def test_stop_gives_up_at_the_timeout_and_reports_what_was_not_delivered(self, settings):
        """A sink that never recovers cannot hold the shutdown beyond its deadline."""
        sink = MemorySink()
        sink.fail_next(1_000_000)
        short = replace(settings, shutdown_timeout_s=1)
        with capture_logs() as logs, running(short, [sink]) as forwarder:
            push_frames(settings.endpoint, frames(range(40)))
            wait_until(lambda: forwarder.stats.received == 40)
        [stopped] = [line for line in logs if line["event"] == "forwarder_stopped"]
        assert stopped["waiting"] == {"memory": 40}
        assert sink.closed

    def test_started_line_then_periodic_stats_lines(self, settings):
        """Operators see where it listens, then the counters every interval."""
        sink = MemorySink()
        with capture_logs() as logs, running(replace(settings, stats_interval_s=1), [sink]):
            push_frames(settings.endpoint, frames(range(5)))
            sink.wait_for(5, timeout=30)
            wait_until(lambda: any(x["event"] == "stats" and x["received"] == 5 for x in logs))
        [started] = [line for line in logs if line["event"] == "forwarder_started"]
        assert started["endpoint"] == settings.endpoint
        assert started["sinks"] == ["memory"]
        stats = next(line for line in logs if line["event"] == "stats" and line["received"] == 5)
        assert stats["sinks"]["memory"]["delivered"] == 5
        info = {line["event"] for line in logs if line["log_level"] == "info"}
        assert info <= {
            "forwarder_started",
            "batch_delivered",
            "stats",
            "emitter_disconnected",
            "forwarder_stopped",
        }
        assert info >= {"forwarder_started", "batch_delivered", "stats", "forwarder_stopped"}


class _BrokenSource(Source):
    def bind(self) -> None:
        raise RuntimeError("something nobody foresaw")


class TestStart:
    def test_any_failure_while_starting_is_one_startup_error(self, settings):
        """Whatever class a start-up step raises, run() raises StartupError with its message
        (the command prints it as one line, exit status 2) and logs the traceback."""
        forwarder = Forwarder(settings, [MemorySink()], source=_BrokenSource(settings.endpoint))
        with capture_logs() as logs, pytest.raises(StartupError) as failed:
            forwarder.run()
        assert str(failed.value) == "cannot start: RuntimeError: something nobody foresaw"
        [logged] = [line for line in logs if line["event"] == "forwarder_start_failed"]
        assert logged["exc_info"] is True
