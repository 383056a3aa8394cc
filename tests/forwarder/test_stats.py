"""The counters behind the stats line."""

from __future__ import annotations

import json
import os
import time

import msgspec
import pytest

from forwarder.stats import Snapshot, Stats


class TestStats:
    def test_snapshot_holds_each_sinks_counters_and_what_waits_for_it(self):
        """The stats line and the metrics read the same numbers, what waits read live."""
        stats = Stats()
        waiting = [3]
        counters = stats.add_sink("kafka", lambda: waiting[0])
        stats.received += 10
        stats.decode_failures += 1
        counters.delivered += 6
        counters.dropped += 1
        waiting[0] = 2
        snapshot = stats.snapshot().as_dict()
        assert snapshot.pop("pid") == os.getpid()
        assert snapshot.pop("uptime_s") >= 0
        assert snapshot.pop("loop_age_s") >= 0
        assert snapshot == {
            "received": 10,
            "decode_failures": 1,
            "dead_letter_write_failures": 0,
            "buffer_damaged": 0,
            "disconnects": 0,
            "emitters_refused": 0,
            "dead_letters_discarded": 0,
            "sinks": {
                "kafka": {
                    "configured": True,
                    "delivered": 6,
                    "retried": 0,
                    "dead_lettered": 0,
                    "dropped": 1,
                    "waiting": 2,
                    "batches": 0,
                    "oldest_age_s": None,
                    "retrying_since_s": None,
                    "last_error": None,
                }
            },
        }

    def test_two_sinks_of_one_name_are_refused(self):
        """Log lines name sinks, so two of a name could not be told apart."""
        stats = Stats()
        stats.add_sink("memory", lambda: 0)
        with pytest.raises(ValueError, match="memory"):
            stats.add_sink("memory", lambda: 0)


class TestSinkCounters:
    def test_a_retrying_sink_reports_since_when_and_why(self):
        """Readiness and `stats` show how long a sink has been failing and with what error."""
        stats = Stats()
        counters = stats.add_sink("kafka", lambda: 1, lambda: 4.5)
        counters.retrying_since = time.monotonic() - 2
        counters.last_error = "broker unreachable"
        sink = stats.snapshot().sinks["kafka"]
        assert sink.retrying_since_s is not None
        assert sink.retrying_since_s >= 2
        assert sink.last_error == "broker unreachable"
        assert sink.oldest_age_s == 4.5


class TestSnapshot:
    def test_json_reads_back_to_the_same_snapshot(self):
        """What the control socket writes, `stats` reads back whole, typed."""
        stats = Stats()
        stats.add_sink("kafka", lambda: 5, lambda: 1.5).retried += 2
        stats.received += 7
        snapshot = stats.snapshot()
        assert Snapshot.from_dict(json.loads(json.dumps(snapshot.as_dict()))) == snapshot

    def test_a_document_missing_a_counter_is_refused(self):
        """A document of another shape is an error, never a snapshot with a hole."""
        document = Stats().snapshot().as_dict()
        del document["received"]
        with pytest.raises(msgspec.ValidationError, match="received"):
            Snapshot.from_dict(document)
