"""Stats snapshots shaped like the service's, for the modules that report them."""

from __future__ import annotations

from typing import Any


def sink_snapshot(**overrides: Any) -> dict[str, Any]:
    """One sink's counters, healthy unless overridden."""
    sink: dict[str, Any] = {
        "configured": True,
        "delivered": 0,
        "retried": 0,
        "dead_lettered": 0,
        "dropped": 0,
        "queued": 0,
        "oldest_age_s": None,
        "batches": 0,
        "retrying_since_s": None,
        "last_error": None,
    }
    sink.update(overrides)
    return sink


def snapshot(**overrides: Any) -> dict[str, Any]:
    """A whole snapshot with a Kafka and a Socket.IO sink that have both delivered."""
    snap: dict[str, Any] = {
        "pid": 4242,
        "uptime_s": 3723.5,
        "received": 1500,
        "decode_failures": 2,
        "disconnects": 3,
        "emitters_refused": 1,
        "dead_letters_discarded": 0,
        "loop_age_s": 0.2,
        "sinks": {
            "kafka": sink_snapshot(
                delivered=1400, retried=3, queued=100, oldest_age_s=1.5, batches=7
            ),
            "socketio": sink_snapshot(delivered=1500, batches=9),
        },
    }
    snap.update(overrides)
    return snap
