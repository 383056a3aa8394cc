"""A sink that keeps events in a list: the pipeline's tests and the demo run without any server."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence

from emitter.contract import Envelope
from forwarder.errors import PermanentSinkError, RetriableSinkError, SinkError
from forwarder.sinks.base import Delivery, Sink

__all__ = ["MemorySink"]


class MemorySink(Sink):
    """Records what it is given and fails on request, retriably or permanently, like a real sink."""

    def __init__(
        self, name: str = "memory", *, wants: Callable[[Envelope], bool] | None = None
    ) -> None:
        self.name = name
        self._wants = wants
        self.selective = wants is not None
        self._changed = threading.Condition()
        self._delivered: list[Envelope] = []
        self._batches: list[list[str]] = []
        self._fail_calls: list[Exception] = []
        self._fail_ids: dict[str, tuple[bool, int]] = {}
        self._gate = threading.Event()
        self._gate.set()
        self.closed = False

    def wants(self, envelope: Envelope) -> bool:
        """Everything, unless a filter was given."""
        return True if self._wants is None else self._wants(envelope)

    def deliver(self, batch: Sequence[Envelope]) -> Delivery:
        """Keep the batch, minus the events told to fail; wait first while paused."""
        self._gate.wait()
        with self._changed:
            self._batches.append([envelope.id for envelope in batch])
            if self._fail_calls:
                raise self._fail_calls.pop(0)
            failed: dict[int, SinkError] = {}
            for index, envelope in enumerate(batch):
                error = self._failure_for(envelope.id)
                if error is None:
                    self._delivered.append(envelope)
                else:
                    failed[index] = error
            self._changed.notify_all()
        return Delivery(failed=failed)

    def fail_next(self, calls: int, error: Exception | None = None) -> None:
        """Make the next `calls` deliveries raise `error` (a RetriableSinkError by default)."""
        with self._changed:
            self._fail_calls.extend(
                error or RetriableSinkError("memory sink told to fail") for _ in range(calls)
            )

    def fail_ids(self, ids: Iterable[str], *, permanent: bool = False, times: int = 1) -> None:
        """Refuse these events: permanently, or retriably for their next `times` deliveries."""
        with self._changed:
            for event_id in ids:
                self._fail_ids[event_id] = (permanent, times)

    def pause(self) -> None:
        """Hold every delivery until resume(), like a sink that stopped answering."""
        self._gate.clear()

    def resume(self) -> None:
        """Let held deliveries through."""
        self._gate.set()

    @property
    def delivered(self) -> list[Envelope]:
        """Every event acknowledged so far, in delivery order."""
        with self._changed:
            return list(self._delivered)

    @property
    def batches(self) -> list[list[str]]:
        """The event ids of every deliver() call, failed ones included."""
        with self._changed:
            return [list(ids) for ids in self._batches]

    def wait_for(self, count: int, timeout: float) -> list[Envelope]:
        """Block until `count` events were delivered; TimeoutError names how many came."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._delivered) >= count, timeout):
                raise TimeoutError(
                    f"{self.name}: {len(self._delivered)} of {count} events after {timeout} s"
                )
            return list(self._delivered)

    def close(self) -> None:
        """Remember the call, so tests can see the forwarder closed its sinks."""
        self.closed = True
        self._gate.set()

    def _failure_for(self, event_id: str) -> SinkError | None:
        rule = self._fail_ids.get(event_id)
        if rule is None:
            return None
        permanent, times = rule
        if permanent:
            return PermanentSinkError(f"memory sink refuses {event_id}")
        if times <= 1:
            del self._fail_ids[event_id]
        else:
            self._fail_ids[event_id] = (permanent, times - 1)
        return RetriableSinkError(f"memory sink failed {event_id} for now")
