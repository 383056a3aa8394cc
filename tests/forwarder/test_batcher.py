"""Batching, from memory and from disk alike: size cap, linger, and full batches from a reader."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from dataclasses import replace

import pytest

from emitter.contract import encode_envelope
from forwarder.batcher import Batcher
from forwarder.settings import Settings
from forwarder.store import Reader, Store, open_store
from harness.events import numbered


@pytest.fixture(params=["disk", "memory"])
def store(request, tmp_path) -> Iterator[Store]:
    settings = replace(Settings(), state_dir=tmp_path, buffer=request.param)
    opened, _ = open_store(settings, ["memory"])
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def reader(store) -> Reader:
    return store.reader("memory")


def put(store: Store, numbers: range) -> None:
    envelopes = [numbered(n) for n in numbers]
    store.put([encode_envelope(e) for e in envelopes], envelopes)


def numbers_of(batch) -> list[int]:
    return [int(e.id.removeprefix("ev-")) for e in batch.envelopes]


class TestBatcher:
    def test_nothing_waiting_gives_an_empty_batch(self, reader):
        """An idle worker gets an empty batch after the wait, so it can look at its stop request."""
        assert Batcher(reader, max_size=10, linger_s=0).next_batch(0.01).envelopes == []

    def test_a_batch_holds_at_most_max_size_and_keeps_the_rest(self, store, reader):
        """The cap splits a reader; the remainder comes next, in order."""
        put(store, range(25))
        taking = Batcher(reader, max_size=10, linger_s=0)
        assert [numbers_of(taking.next_batch(0.01)) for _ in range(4)] == [
            list(range(10)),
            list(range(10, 20)),
            list(range(20, 25)),
            [],
        ]

    def test_a_backlog_drains_in_full_batches_even_with_no_linger(self, store, reader):
        """Waiting events are taken without waiting, so linger 0 does not mean batches of one."""
        put(store, range(500))
        assert numbers_of(Batcher(reader, max_size=500, linger_s=0).next_batch(0.01)) == list(
            range(500)
        )

    def test_an_event_arriving_within_the_linger_joins_the_batch(self, store, reader):
        """The batcher waits after the first event for more, up to the linger."""
        put(store, range(1))
        late = threading.Timer(0.1, put, args=(store, range(1, 2)))
        late.start()
        try:
            batch = Batcher(reader, max_size=2, linger_s=60).next_batch(5)
        finally:
            late.cancel()
        assert numbers_of(batch) == [0, 1]

    def test_an_idle_wait_ends_as_soon_as_an_event_arrives(self, store, reader):
        """A worker waiting for work is woken by the receiving thread, not by a poll interval."""
        late = threading.Timer(0.05, put, args=(store, range(1)))
        late.start()
        try:
            assert numbers_of(Batcher(reader, max_size=1, linger_s=0).next_batch(30)) == [0]
        finally:
            late.cancel()

    def test_the_linger_is_measured_on_the_injected_clock(self, store, reader):
        """Once the clock passes the linger the batch goes, however long the linger was."""
        put(store, range(1))
        ticks = itertools.count(step=100)
        taking = Batcher(reader, clock=lambda: next(ticks), max_size=10, linger_s=50)
        assert numbers_of(taking.next_batch(0.01)) == [0]
