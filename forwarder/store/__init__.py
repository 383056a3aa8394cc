"""Where events wait for each sink until it finishes them: on disk (default) or in memory."""

from __future__ import annotations

from collections.abc import Sequence

from forwarder.settings import Settings
from forwarder.store._file import BUFFER_FILE
from forwarder.store.base import Batch, Closed, Damaged, Reader, Store, Stored, Unconfigured
from forwarder.store.disk import DiskStore, Salvage, discard, open_disk
from forwarder.store.memory import MemoryStore

__all__ = [
    "BUFFER_FILE",
    "Batch",
    "Closed",
    "Damaged",
    "DiskStore",
    "MemoryStore",
    "Reader",
    "Salvage",
    "Store",
    "Stored",
    "Unconfigured",
    "discard",
    "open_disk",
    "open_store",
]


def open_store(settings: Settings, sinks: Sequence[str]) -> tuple[Store, Salvage | None]:
    """The store FORWARDER_BUFFER asks for, for the configured `sinks`; and what became of a
    damaged buffer file, if one was found."""
    if settings.buffer == "memory":
        return MemoryStore(sinks, settings.queue_max), None
    return open_disk(
        settings.state_dir / BUFFER_FILE,
        sinks,
        max_bytes=settings.buffer_max_bytes,
        when_full=settings.when_full,
        fsync=settings.fsync,
        queue_max=settings.queue_max,
    )
