"""The one interface every sink implements, so retry and batching live once above them."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import ClassVar

from emitter.contract import Envelope
from forwarder.errors import SinkError

__all__ = ["Delivery", "Done", "InFlight", "Sink"]


@dataclass(frozen=True, slots=True)
class Delivery:
    """What became of one batch: every index not in `failed` was acknowledged by the destination."""

    failed: Mapping[int, SinkError] = field(default_factory=dict)


class InFlight(ABC):
    """A batch handed to a sink that has not necessarily been answered yet."""

    @abstractmethod
    def result(self, *, hurry: bool) -> Delivery:
        """Wait until each event was acknowledged or failed, or the sink gave up on the batch;
        with `hurry`, nothing else waits, so the sink sends what it holds at once."""
        raise NotImplementedError


class Done(InFlight):
    """A batch already answered: what a sink that cannot pipeline returns from `send`."""

    def __init__(self, delivery: Delivery) -> None:
        self._delivery = delivery

    def result(self, *, hurry: bool) -> Delivery:
        """The answer given when the batch was sent."""
        return self._delivery


class Sink(ABC):
    """A destination; `deliver` returns only once each event is acknowledged or has failed."""

    name: str = "sink"
    noisy_libraries: ClassVar[tuple[str, ...]] = ()
    """Loggers of the client library that report every failed attempt; shown at DEBUG only."""
    selective: bool = False
    """Whether `wants` may refuse an event; when not, the worker does not ask it of each one."""
    batches_in_flight: int = 1
    """How many batches the worker may `send` before the oldest is answered; above 1 the sink
    keeps the promise below."""

    @abstractmethod
    def deliver(self, batch: Sequence[Envelope]) -> Delivery:
        """Send the batch in order; raise RetriableSinkError when nothing could be attempted."""
        raise NotImplementedError

    def send(self, batch: Sequence[Envelope]) -> InFlight:
        """Start delivering the batch and return without waiting where the sink can.

        A sink with `batches_in_flight` above 1 promises that once a batch failed, nothing of a
        later one reaches the destination until `deliver` is called again, so a retry never lands
        behind them."""
        return Done(self.deliver(batch))

    def has_room(self) -> bool:
        """Whether another batch may go out before the oldest is answered (bounded by bytes)."""
        return True

    def wants(self, envelope: Envelope) -> bool:
        """Whether this sink is meant to receive the event; Kafka takes all, the browser some."""
        return True

    def check(self) -> str:
        """Reach the destination once for `check`: a one-line description, or raise SinkError."""
        return "ok"

    def close(self) -> None:  # noqa: B027 - optional hook: most sinks need no clean-up
        """Release connections; the default sink holds none."""

    def __enter__(self) -> Sink:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
