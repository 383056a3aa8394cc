"""When the forwarder counts as alive and as ready, for /healthz and /readyz, from one snapshot."""

from __future__ import annotations

from typing import Final

from forwarder.stats import Snapshot

__all__ = ["RETRY_BUDGET_S", "STALL_S", "live", "ready"]

STALL_S: Final = 10.0
"""A main loop that has not gone round for this long is hung: systemd or an orchestrator should
restart it."""
RETRY_BUDGET_S: Final = 60.0
"""A sink failing for longer than this is not delivering: traffic should go elsewhere."""


def live(snapshot: Snapshot) -> tuple[bool, str]:
    """Whether the main loop still goes round, and a sentence saying so."""
    age = snapshot.loop_age_s
    if age < STALL_S:
        return True, f"main loop went round {age:.1f} s ago"
    return False, f"main loop stalled for {age:.1f} s (limit {STALL_S:g} s)"


def ready(snapshot: Snapshot) -> tuple[bool, dict[str, str]]:
    """Whether every sink delivers, and per sink why or why not."""
    reasons: dict[str, str] = {}
    all_ready = True
    for name, sink in snapshot.sinks.items():
        since = sink.retrying_since_s
        if not sink.configured:
            reasons[name] = f"not in ORDER_EVENT_MODE, {sink.waiting} events waiting"
        elif since is None:
            reasons[name] = "delivering"
        elif since < RETRY_BUDGET_S:
            reasons[name] = f"retrying for {since:.1f} s, within {RETRY_BUDGET_S:g} s"
        else:
            all_ready = False
            error = sink.last_error or "unknown error"
            reasons[name] = (
                f"failing for {since:.1f} s, over the {RETRY_BUDGET_S:g} s budget: {error}"
            )
    return all_ready, reasons
