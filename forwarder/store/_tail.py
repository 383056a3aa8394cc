"""The newest stored runs, decoded once, shared by the sinks that keep up, and where the store
stands: the last position stored, the first not deleted to make room."""

from __future__ import annotations

import bisect
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from emitter.contract import Envelope

__all__ = ["Run", "Tail"]

_TAIL_EVENTS: Final = 20_000
_TAIL_BYTES: Final = 16 << 20
"""How much of the newest stored events the tail keeps decoded for sinks that keep up."""


@dataclass(slots=True)
class Run:
    """Events stored together, decoded, at positions first..last."""

    first: int
    last: int
    size: int
    envelopes: Sequence[Envelope]


class Tail:
    """The newest stored runs, decoded, and where the store stands; guarded by `lock`.

    Everything in it is also in the file. Its runs are contiguous and belong to every
    configured sink (runs stored by this process carry all of them).
    """

    def __init__(self, last: int) -> None:
        self.lock = threading.Condition()
        self.runs: list[Run] = []
        self.lasts: list[int] = []
        self.start = 0
        self.events = 0
        self.bytes = 0
        self.last = last
        """The last position stored (committed)."""
        self.front = 0
        """Positions before this one were deleted to make room (FORWARDER_WHEN_FULL)."""
        self.closed = False

    def append(self, run: Run) -> None:
        self.runs.append(run)
        self.lasts.append(run.last)
        self.events += len(run.envelopes)
        self.bytes += run.size
        self.last = run.last
        while (self.events > _TAIL_EVENTS or self.bytes > _TAIL_BYTES) and self._held() > 1:
            self._pop()

    def after(self, position: int) -> int:
        """Index of the first run holding a position after `position` (len(runs) if none)."""
        return bisect.bisect_right(self.lasts, position, self.start)

    def drop_through(self, position: int) -> None:
        """Forget positions up to `position`, deleted from the file to make room."""
        self.front = max(self.front, position + 1)
        while self._held() and self.runs[self.start].last <= position:
            self._pop()
        if self._held() and self.runs[self.start].first <= position:
            run = self.runs[self.start]
            cut = position + 1 - run.first
            self.events -= cut
            self.runs[self.start] = Run(position + 1, run.last, run.size, run.envelopes[cut:])

    def _held(self) -> int:
        return len(self.runs) - self.start

    def _pop(self) -> None:
        run = self.runs[self.start]
        self.events -= len(run.envelopes)
        self.bytes -= run.size
        self.start += 1
        if self.start > 1024 and self.start * 2 > len(self.runs):
            del self.runs[: self.start]
            del self.lasts[: self.start]
            self.start = 0
