"""Every kind of sink: its ORDER_EVENT_MODE name, its settings, and the class that delivers.

Adding a sink means a module for it (the class, with `describe` and `noisy_libraries`), its
settings in `forwarder.sinks.settings`, one entry here, the docs and the tests.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Generic, Protocol, Self, TypeVar

from emitter.config import Mode
from forwarder.sinks.base import Sink
from forwarder.sinks.settings import KafkaSettings, SocketIOSettings

if TYPE_CHECKING:
    from forwarder.settings import Settings

__all__ = ["SINKS", "SinkKind", "SinkSettings", "build_sinks", "noisy_libraries"]


class SinkSettings(Protocol):
    """What every sink's settings offer the forwarder's settings."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self: ...

    @property
    def secrets(self) -> tuple[str, ...]: ...

    def describe(self) -> str: ...


S = TypeVar("S")
S_contra = TypeVar("S_contra", contravariant=True)


class SinkClass(Protocol[S_contra]):
    """A sink class as the table needs it: built from its settings, naming its noisy libraries."""

    @property
    def noisy_libraries(self) -> tuple[str, ...]: ...

    def __call__(self, settings: S_contra, /) -> Sink: ...


@dataclass(frozen=True)
class SinkKind(Generic[S]):
    """One row of the table."""

    settings: type[S]
    load: Callable[[S], SinkClass[S]]
    """The sink class for these settings; imports its client library only when called."""


def _kafka(settings: KafkaSettings) -> SinkClass[KafkaSettings]:
    if settings.client == "confluent":
        from forwarder.sinks.kafka_confluent import (  # noqa: PLC0415 - optional dependency
            ConfluentKafkaSink,
        )

        return ConfluentKafkaSink
    from forwarder.sinks.kafka import KafkaSink  # noqa: PLC0415 - optional dependency

    return KafkaSink


def _socketio(settings: SocketIOSettings) -> SinkClass[SocketIOSettings]:
    from forwarder.sinks.socketio import SocketIOSink  # noqa: PLC0415 - optional dependency

    return SocketIOSink


SINKS: Final[Mapping[Mode, SinkKind[Any]]] = {
    "KAFKA": SinkKind(KafkaSettings, _kafka),
    "SOCKETIO": SinkKind(SocketIOSettings, _socketio),
}


def _classes(settings: Settings) -> list[tuple[SinkClass[Any], object]]:
    return [(SINKS[mode].load(sink), sink) for mode, sink in settings.sinks.items()]


def build_sinks(settings: Settings) -> list[Sink]:
    """One sink per enabled mode; only the client libraries the settings choose are imported."""
    sinks: list[Sink] = []
    try:
        for sink_class, sink_settings in _classes(settings):
            sinks.append(sink_class(sink_settings))
    except BaseException:
        for sink in sinks:
            sink.close()
        raise
    return sinks


def noisy_libraries(settings: Settings) -> Sequence[str]:
    """The loggers of the configured sinks' client libraries, which log every failed attempt."""
    return [name for sink_class, _ in _classes(settings) for name in sink_class.noisy_libraries]
