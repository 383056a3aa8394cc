"""Batching, from memory and from disk alike: size cap, linger, and full batches from a reader."""

from __future__ import annotations

import itertools
import threading
import time
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

    def test_without_a_linger_a_batch_goes_without_waiting_for_more(self, store, reader):
        """Linger 0 sends what is there at once: faster than a 0.3 s linger in the same test."""
        put(store, range(1))
        started = time.monotonic()
        assert numbers_of(Batcher(reader, max_size=10, linger_s=0.3).next_batch(0.01)) == [0]
        lingered = time.monotonic() - started
        assert lingered >= 0.3
        put(store, range(1, 2))
        started = time.monotonic()
        assert numbers_of(Batcher(reader, max_size=10, linger_s=0).next_batch(0.01)) == [1]
        assert time.monotonic() - started < lingered

    def test_it_asks_the_backlog_for_the_room_left_and_the_linger_left(self, store, reader):
        """After the first take, each wait for more is the linger left on the clock, for at most
        the room left in the batch; a full batch asks no more."""
        put(store, range(3))
        spy = Recording(reader)
        taking = Batcher(spy, clock=lambda: 100.0, max_size=5, linger_s=0.3)
        assert numbers_of(taking.next_batch(0.01)) == [0, 1, 2]
        assert spy.takes == [(5, 0.01), (2, pytest.approx(0.3))]
        put(store, range(3, 8))
        spy.takes.clear()
        assert numbers_of(taking.next_batch(0.01)) == [3, 4, 5, 6, 7]
        assert spy.takes == [(5, 0.01)]
        for clock, wait in (([500.0, 500.2], 0.1), ([500.0, 501.0], 0.0)):
            put(store, range(2))
            spy.takes.clear()
            taking = Batcher(spy, clock=iter(clock).__next__, max_size=5, linger_s=0.3)
            assert len(taking.next_batch(0.01)) == 2
            assert spy.takes == [(5, 0.01), (3, pytest.approx(wait))]


class Recording:
    """The backlog, with each take's arguments written down."""

    def __init__(self, reader: Reader) -> None:
        self._reader = reader
        self.takes: list[tuple[int, float]] = []

    def take(self, limit: int, wait_s: float):
        self.takes.append((limit, wait_s))
        return self._reader.take(limit, wait_s)
