"""The memory store: a bounded queue per sink, drops reported, every event handed out once."""

from __future__ import annotations

from emitter.contract import encode_envelope
from forwarder.store import MemoryStore, Stored
from harness.events import numbered


def put(store: MemoryStore, numbers: range) -> Stored:
    envelopes = [numbered(n) for n in numbers]
    return store.put([encode_envelope(e) for e in envelopes], envelopes)


class TestMemoryStore:
    def test_each_sink_takes_every_event_once_in_order(self):
        store = MemoryStore(["kafka", "socketio"], 100)
        put(store, range(10))
        kafka = store.reader("kafka")
        first = kafka.take(4, 0)
        assert [e.id for e in first.envelopes] == [f"ev-{n:06d}" for n in range(4)]
        assert (first.first, first.last) == (1, 4)
        kafka.done(first)
        assert len(kafka.take(100, 0)) == 6
        assert len(store.reader("socketio").take(100, 0)) == 10

    def test_a_full_queue_drops_newest_and_says_so(self):
        """Events taken but not finished count against FORWARDER_QUEUE_MAX too."""
        store = MemoryStore(["kafka"], 5)
        put(store, range(3))
        store.reader("kafka").take(2, 0)
        assert put(store, range(3, 6)) == Stored({"kafka": 1}, "queue_full")
        assert store.reader("kafka").waiting() == 5

    def test_depth_and_oldest_age_cover_what_is_taken_until_done(self):
        store = MemoryStore(["kafka"], 10)
        reader = store.reader("kafka")
        assert (reader.waiting(), reader.oldest_age_s()) == (0, None)
        put(store, range(2))
        batch = reader.take(10, 0)
        assert reader.waiting() == 2
        assert reader.oldest_age_s() is not None
        reader.done(batch)
        assert (reader.waiting(), reader.oldest_age_s()) == (0, None)

    def test_close_wakes_a_waiting_take(self):
        store = MemoryStore(["kafka"], 10)
        store.close()
        assert not store.reader("kafka").take(10, 30)

    def test_takes_span_puts_in_order(self):
        store = MemoryStore(["kafka"], 100)
        for start in range(0, 30, 7):
            put(store, range(start, min(start + 7, 30)))
        reader = store.reader("kafka")
        taken = []
        while batch := reader.take(4, 0):
            taken += [int(e.id.removeprefix("ev-")) for e in batch.envelopes]
            assert batch.last - batch.first + 1 == len(batch)
            reader.done(batch)
        assert taken == list(range(30))
