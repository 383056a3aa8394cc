"""When the forwarder counts as alive and as ready, for /healthz and /readyz."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Readiness"]


@dataclass(frozen=True)
class Readiness:
    """When the forwarder counts as alive and as ready, both judged from one stats snapshot."""

    stall_s: float = 10.0
    """A main loop that has not gone round for this long is hung: systemd or an orchestrator
    should restart it."""
    retry_budget_s: float = 60.0
    """A sink failing for longer than this is not delivering: traffic should go elsewhere."""

    def live(self, snapshot: Mapping[str, Any]) -> tuple[bool, str]:
        """Whether the main loop still goes round, and a sentence saying so."""
        age = float(snapshot["loop_age_s"])
        if age < self.stall_s:
            return True, f"main loop went round {age:.1f} s ago"
        return False, f"main loop stalled for {age:.1f} s (limit {self.stall_s:g} s)"

    def ready(self, snapshot: Mapping[str, Any]) -> tuple[bool, dict[str, str]]:
        """Whether every sink delivers, and per sink why or why not."""
        reasons: dict[str, str] = {}
        ready = True
        for name, sink in snapshot["sinks"].items():
            since = sink.get("retrying_since_s")
            if not sink.get("configured", True):
                reasons[name] = f"not in ORDER_EVENT_MODE, {sink['queued']} events kept"
            elif since is None:
                reasons[name] = "delivering"
            elif since < self.retry_budget_s:
                reasons[name] = f"retrying for {since:.1f} s, within {self.retry_budget_s:g} s"
            else:
                ready = False
                error = sink.get("last_error") or "unknown error"
                reasons[name] = (
                    f"failing for {since:.1f} s, over the {self.retry_budget_s:g} s budget: {error}"
                )
        return ready, reasons
