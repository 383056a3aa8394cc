"""The counters behind the stats line."""

from __future__ import annotations

import pytest

from forwarder.stats import Stats


class TestStats:
    def test_snapshot_is_a_plain_dict_with_each_sinks_counters_and_depth(self):
        """The stats line and the metrics read the same numbers, the queue depth read live."""
        stats = Stats()
        depth = [3]
        counters = stats.add_sink("kafka", lambda: depth[0])
        stats.received += 10
        stats.decode_failures += 1
        counters.delivered += 6
        counters.dropped += 1
        depth[0] = 2
        assert stats.snapshot() == {
            "received": 10,
            "decode_failures": 1,
            "dead_letter_write_failures": 0,
            "sinks": {
                "kafka": {
                    "delivered": 6,
                    "retried": 0,
                    "dead_lettered": 0,
                    "dropped": 1,
                    "queued": 2,
                    "batches": 0,
                }
            },
        }

    def test_two_sinks_of_one_name_are_refused(self):
        """Log lines name sinks, so two of a name could not be told apart."""
        stats = Stats()
        stats.add_sink("memory", lambda: 0)
        with pytest.raises(ValueError, match="memory"):
            stats.add_sink("memory", lambda: 0)
