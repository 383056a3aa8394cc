"""The helpers shipped for users' own tests behave as the real parts do."""

from __future__ import annotations

from emitter.contract import SCHEMA_VERSION, SYSTEM_KEY, decode_envelope, encode_envelope
from emitter.publisher import EventPublisher
from emitter.testing import MemoryTransport, envelope


class TestEnvelope:
    def test_a_valid_envelope_of_the_current_schema(self):
        """What the factory builds passes the forwarder's strict decoder unchanged."""
        built = envelope("order_event", {"symbol": "SBIN"}, user_id="alice")
        assert decode_envelope(encode_envelope(built)) == built
        assert (built.v, built.key) == (SCHEMA_VERSION, "alice")

    def test_an_event_of_no_user_is_keyed_as_the_system(self):
        """As the publisher keys it."""
        assert envelope().key == SYSTEM_KEY


class TestMemoryTransport:
    def test_keeps_what_a_publisher_sends_in_order(self):
        """Frames are the publisher's real encoding, decoded back for assertions."""
        transport = MemoryTransport()
        publisher = EventPublisher(transport)
        assert publisher.emit("first", {"n": 1}, user_id="alice")
        assert publisher.emit("second", {"n": 2})
        assert [e.event for e in transport.envelopes()] == ["first", "second"]
        assert transport.stats().queued == 2

    def test_a_full_transport_drops_and_counts(self):
        """With a limit, the publisher sees False and the drop is counted, as when the real one is
        full."""
        transport = MemoryTransport(limit=1)
        publisher = EventPublisher(transport)
        assert [publisher.emit("e", {}) for _ in range(3)] == [True, False, False]
        assert (transport.stats().queued, transport.stats().dropped) == (1, 2)
