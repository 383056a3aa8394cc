"""Stats snapshots shaped like the service's, for the modules that report them."""

from __future__ import annotations

import dataclasses
from typing import Any

from forwarder.stats import SinkSnapshot, Snapshot

HEALTHY_SINK = SinkSnapshot(
    configured=True,
    delivered=0,
    retried=0,
    dead_lettered=0,
    dropped=0,
    waiting=0,
    batches=0,
    oldest_age_s=None,
    retrying_since_s=None,
    last_error=None,
)


def sink_snapshot(**overrides: Any) -> SinkSnapshot:
    """One sink's counters, healthy unless overridden."""
    return dataclasses.replace(HEALTHY_SINK, **overrides)


def snapshot(**overrides: Any) -> Snapshot:
    """A whole snapshot with a Kafka and a Socket.IO sink that have both delivered."""
    whole = Snapshot(
        pid=4242,
        uptime_s=3723.5,
        loop_age_s=0.2,
        received=1500,
        decode_failures=2,
        dead_letter_write_failures=0,
        buffer_damaged=0,
        disconnects=3,
        emitters_refused=1,
        dead_letters_discarded=0,
        sinks={
            "kafka": sink_snapshot(
                delivered=1400, retried=3, waiting=100, oldest_age_s=1.5, batches=7
            ),
            "socketio": sink_snapshot(delivered=1500, batches=9),
        },
    )
    return dataclasses.replace(whole, **overrides)
