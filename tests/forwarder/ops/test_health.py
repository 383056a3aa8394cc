"""Liveness and readiness judged from a stats snapshot."""

from __future__ import annotations

from forwarder.ops import health
from tests.support.snapshots import sink_snapshot, snapshot


class TestHealth:
    def test_live_until_the_loop_stalls(self):
        """A loop that went round less than STALL_S (10 s) ago is alive; one older is not."""
        assert health.live(snapshot(loop_age_s=9.9))[0] is True
        alive, reason = health.live(snapshot(loop_age_s=10.0))
        assert alive is False
        assert "stalled for 10.0 s" in reason

    def test_retrying_within_budget_is_ready(self):
        """A sink that started failing recently still counts as delivering."""
        snap = snapshot(sinks={"kafka": sink_snapshot(retrying_since_s=59.0, last_error="timeout")})
        ready, reasons = health.ready(snap)
        assert ready is True
        assert reasons == {"kafka": "retrying for 59.0 s, within 60 s"}

    def test_over_budget_names_the_sink_and_error(self):
        """One sink over its budget makes the whole forwarder unready, with that sink's error."""
        snap = snapshot(
            sinks={
                "kafka": sink_snapshot(retrying_since_s=61.0, last_error="broker unreachable"),
                "socketio": sink_snapshot(),
            }
        )
        ready, reasons = health.ready(snap)
        assert ready is False
        assert reasons["kafka"] == "failing for 61.0 s, over the 60 s budget: broker unreachable"
        assert reasons["socketio"] == "delivering"

    def test_a_sink_no_longer_configured_does_not_make_it_unready(self):
        """Its kept events are reported; readiness is about the sinks that deliver."""
        kept = sink_snapshot(configured=False, waiting=200)
        ready, reasons = health.ready(snapshot(sinks={"kafka": kept}))
        assert ready is True
        assert reasons == {"kafka": "not in ORDER_EVENT_MODE, 200 events waiting"}
