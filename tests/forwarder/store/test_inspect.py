"""What `check` reads of a buffer file, without changing it."""

from __future__ import annotations

from pathlib import Path

import pytest

from emitter.contract import encode_envelope
from forwarder.store import BUFFER_FILE, open_disk
from forwarder.store.inspect import describe
from harness.events import numbered


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / BUFFER_FILE


def fill(path: Path, sinks: list[str], count: int, *, finish: dict[str, int]) -> int:
    """Store `count` events; each sink in `finish` finishes that many. Returns their bytes."""
    store, _ = open_disk(path, sinks, max_bytes=1 << 20)
    envelopes = [numbered(n) for n in range(count)]
    frames = [encode_envelope(e) for e in envelopes]
    store.put(frames, envelopes)
    for sink, finished in finish.items():
        backlog = store.reader(sink)
        backlog.done(backlog.take(finished, 0))
    store.close()
    return sum(map(len, frames))


class TestDescribe:
    def test_a_missing_file_is_created_at_start(self, path):
        assert describe(path, 1 << 20, ["kafka"]) == (
            f"{path} (created at start), up to 1,048,576 bytes"
        )
        assert not path.exists()

    def test_counts_each_event_once_and_each_sink_what_it_has_not_finished(self, path):
        size = fill(path, ["kafka", "socketio"], 10, finish={"kafka": 4, "socketio": 6})
        assert describe(path, 1 << 20, ["kafka", "socketio"]) == (
            f"{path}: 6 events waiting (kafka 6; socketio 4), {size:,} of 1,048,576 bytes"
        )

    def test_names_a_sink_no_longer_configured_and_how_to_drop_its_events(self, path):
        fill(path, ["kafka"], 3, finish={})
        detail = describe(path, 1 << 20, ["socketio"])
        assert "3 events waiting (kafka 3, not in ORDER_EVENT_MODE" in detail
        assert "openalgo-forwarder backlog discard kafka" in detail

    def test_a_damaged_file_is_named_and_left_alone(self, path):
        path.write_bytes(b"not a database at all" * 100)
        with pytest.raises(RuntimeError, match="will be set aside at start"):
            describe(path, 1 << 20, ["kafka"])
        assert path.read_bytes().startswith(b"not a database")
