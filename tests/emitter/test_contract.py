"""The strict decoder turns every malformed frame into InvalidEnvelope, round-trips valid ones."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emitter.contract import (
    FIRST_SCHEMA_VERSION,
    SCHEMA_VERSION,
    Envelope,
    InvalidEnvelope,
    RelayItem,
    decode_envelope,
    encode_envelope,
    frame_event_id,
    read_relay_item,
    relay_item,
    utc_timestamp,
)

ints = st.integers(-(2**63), 2**64 - 1)
"""Every integer msgpack can carry."""
json_values = st.recursive(
    st.none() | st.booleans() | ints | st.floats(allow_nan=False) | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
msgpack_values = st.recursive(
    st.none() | st.booleans() | ints | st.floats() | st.text() | st.binary(),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.one_of(st.text(max_size=4), ints), inner, max_size=4)
    ),
    max_leaves=20,
)

non_empty = st.text(min_size=1, max_size=20)
envelopes = st.builds(
    Envelope,
    v=st.just(SCHEMA_VERSION),
    id=non_empty,
    ts=st.integers(1, 2**63 - 1),
    event=non_empty,
    topic=st.none() | st.text(max_size=20),
    user_id=st.none() | st.text(max_size=20),
    key=non_empty,
    data=st.dictionaries(st.text(max_size=8), json_values, max_size=6),
    browser=st.booleans(),
    extra=st.none() | st.dictionaries(st.text(max_size=8), json_values, max_size=6),
)


NINE_FIELD_FRAME = (
    "9901d9203636353936636630623764313035623730303030303030303030303030303031cf188f2cfd53c1df15"
    "ab6f726465725f6576656e74ac6f726465722e706c61636564a5616c696365a5616c69636584a673796d626f6c"
    "a45342494ea6616374696f6ea3425559a76f726465726964a432353031a46d6f6465a46c697665c3"
)
"""An order event as the emitter encoded it before the tenth field, `extra`, was added."""

FRAMES_OF_EVERY_VERSION: dict[int, str] = {1: NINE_FIELD_FRAME}
"""A frame each schema version's emitter wrote: a version bump adds its own here."""


def not_int(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return values.filter(lambda v: type(v) is not int)


WRONG_AT: dict[int, st.SearchStrategy[Any]] = {
    0: ints.filter(lambda v: not FIRST_SCHEMA_VERSION <= v <= SCHEMA_VERSION)
    | not_int(msgpack_values),
    1: st.just("") | msgpack_values.filter(lambda v: type(v) is not str),
    2: st.integers(-(2**63), 0) | not_int(msgpack_values),
    3: st.just("") | msgpack_values.filter(lambda v: type(v) is not str),
    4: msgpack_values.filter(lambda v: v is not None and type(v) is not str),
    5: msgpack_values.filter(lambda v: v is not None and type(v) is not str),
    6: st.just("") | msgpack_values.filter(lambda v: type(v) is not str),
    7: msgpack_values.filter(lambda v: type(v) is not dict)
    | st.dictionaries(ints, json_values, min_size=1, max_size=3),
    8: msgpack_values.filter(lambda v: type(v) is not bool),
    9: msgpack_values.filter(lambda v: v is not None and type(v) is not dict)
    | st.dictionaries(ints, json_values, min_size=1, max_size=3),
}


@st.composite
def almost_envelopes(draw: st.DrawFn) -> list[Any]:
    """A valid envelope's fields as a list, then one field made wrong or the length changed."""
    fields = list(msgspec.structs.astuple(draw(envelopes)))
    how = draw(st.sampled_from(["field", "short", "long"]))
    if how == "field":
        position = draw(st.integers(0, len(fields) - 1))
        fields[position] = draw(WRONG_AT[position])
    elif how == "short":
        fields = fields[: draw(st.integers(0, 7))]
    else:
        fields += draw(st.lists(msgpack_values, min_size=1, max_size=3))
    return fields


class TestDecodeEnvelope:
    @settings(max_examples=500)
    @given(st.binary(max_size=200))
    def test_arbitrary_bytes_raise_invalid_envelope(self, frame: bytes):
        """Random bytes never crash the decoder: they are refused with a reason."""
        with pytest.raises(InvalidEnvelope) as refused:
            decode_envelope(frame)
        assert refused.value.reason

    @settings(max_examples=200)
    @given(msgpack_values)
    def test_wrongly_shaped_msgpack_raises_invalid_envelope(self, value: Any):
        """Well-formed msgpack that is not an envelope is refused."""
        with pytest.raises(InvalidEnvelope):
            decode_envelope(msgspec.msgpack.encode(value))

    @settings(max_examples=300)
    @given(almost_envelopes())
    def test_an_envelope_with_one_thing_wrong_raises_invalid_envelope(self, fields: list[Any]):
        """A list that looks like an envelope but has a wrong type, value or length is refused."""
        with pytest.raises(InvalidEnvelope):
            decode_envelope(msgspec.msgpack.encode(fields))

    def test_deep_nesting_is_refused_not_crashing(self):
        """A frame nested far beyond any real payload is refused, not a RecursionError."""
        frame = b"\x91" * 100_000 + b"\xc0"
        with pytest.raises(InvalidEnvelope):
            decode_envelope(frame)

    @settings(max_examples=200)
    @given(envelopes)
    def test_valid_envelopes_round_trip(self, envelope: Envelope):
        """Whatever is encoded is decoded to an equal envelope."""
        assert decode_envelope(encode_envelope(envelope)) == envelope

    def test_a_frame_of_the_nine_field_layout_still_decodes(self):
        """A frame written before `extra` existed, as a disk buffer may hold, decodes unchanged."""
        frame = bytes.fromhex(NINE_FIELD_FRAME)

        assert decode_envelope(frame) == Envelope(
            1,
            "66596cf0b7d105b70000000000000001",
            1769682645123456789,
            "order_event",
            "order.placed",
            "alice",
            "alice",
            {"symbol": "SBIN", "action": "BUY", "orderid": "2501", "mode": "live"},
            True,
            None,
        )

    def test_the_optional_browser_flag_defaults_to_true(self):
        """A frame from a producer that omits the last field is a browser event."""
        fields = [SCHEMA_VERSION, "id", 1, "order_event", None, None, "admin", {}]
        assert decode_envelope(msgspec.msgpack.encode(fields)).browser is True


class TestSchemaVersions:
    def test_a_frame_of_every_version_is_kept(self):
        """Raising SCHEMA_VERSION without keeping a frame of the new version fails here."""
        assert set(FRAMES_OF_EVERY_VERSION) == set(range(FIRST_SCHEMA_VERSION, SCHEMA_VERSION + 1))

    @pytest.mark.parametrize(("version", "frame"), sorted(FRAMES_OF_EVERY_VERSION.items()))
    def test_every_earlier_version_still_decodes(self, version, frame):
        """Rows a disk buffer holds across an upgrade stay readable."""
        assert decode_envelope(bytes.fromhex(frame)).v == version

    def test_a_newer_version_is_refused_with_its_id_traceable(self):
        """A frame from an emitter newer than this forwarder is refused, and named by its id."""
        fields = [SCHEMA_VERSION + 1, "ev-next", 1, "order_event", None, None, "admin", {}]
        frame = msgspec.msgpack.encode(fields)
        with pytest.raises(InvalidEnvelope):
            decode_envelope(frame)
        assert frame_event_id(frame) == "ev-next"


class TestFrameEventId:
    def test_a_frame_of_another_schema_version_still_yields_its_id(self):
        """An emitter newer than the forwarder is traced by event id."""
        frame = msgspec.msgpack.encode([2, "ev-from-the-future", 1, "order_event"])
        assert frame_event_id(frame) == "ev-from-the-future"

    @pytest.mark.parametrize("frame", [b"", b"\xc1", b"\x93\x01", msgspec.msgpack.encode({"a": 1})])
    def test_garbage_has_no_id(self, frame):
        """Undecodable or non-array frames give None."""
        assert frame_event_id(frame) is None


@given(st.integers(min_value=1, max_value=4_102_444_800 * 10**9))
def test_utc_timestamp_is_the_seeds_iso_format_for_any_instant(ns):
    """The cached fast path writes exactly what datetime's isoformat writes, microseconds and Z."""
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=ns // 1000)
    assert utc_timestamp(ns) == moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


class TestRelayItem:
    def test_built_and_read_back_alike(self):
        """What the forwarder sends is what the relay reads: [event, payload, user_id]."""
        item = relay_item("order_event", {"when": datetime(2026, 1, 29, tzinfo=UTC)}, "alice")
        assert item == ["order_event", {"when": "2026-01-29T00:00:00Z"}, "alice"]
        assert read_relay_item(item) == RelayItem("order_event", item[1], "alice")

    @pytest.mark.parametrize(
        ("event", "payload", "reason"),
        [
            ("connect", {}, "connect is reserved by Socket.IO"),
            ("order_event", {"x": object()}, "order_event payload is not JSON"),
            ("", {}, "length >= 1"),
        ],
    )
    def test_the_forwarder_refuses_what_the_relay_would_skip(self, event, payload, reason):
        """The sender's check names the problem; the item is never sent."""
        with pytest.raises(ValueError, match=reason):
            relay_item(event, payload, None)

    @pytest.mark.parametrize(
        "raw",
        [
            None,
            [],
            ["order_event", {}],
            ["order_event", [], None],
            ["order_event", {}, 7],
            ["disconnect", {}, None],
            ["", {}, None],
            ["order_event", {}, None, "extra"],
        ],
    )
    def test_the_relay_skips_anything_else(self, raw):
        """A malformed item is skipped by the receiver, not raised."""
        assert read_relay_item(raw) is None
