"""A real PULL peer standing in for the forwarder, and a clean publisher for every test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from emitter import Envelope, EventPublisherFactory, decode_envelope

SETTING_PREFIXES = ("FORWARDER_", "EMITTER_")


class Peer:
    """A forwarder stand-in: a real ZeroMQ PULL socket bound where the emitter pushes."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._socket = self._context.socket(zmq.PULL)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.bind(endpoint)

    def frames(self, count: int, timeout_s: float = 10.0) -> list[bytes]:
        """Exactly `count` frames, or fail once `timeout_s` passes without the next one."""
        received: list[bytes] = []
        while len(received) < count:
            if not self._socket.poll(int(timeout_s * 1000)):
                pytest.fail(f"received {len(received)} of {count} frames")
            received.append(self._socket.recv())
        return received

    def envelopes(self, count: int, timeout_s: float = 10.0) -> list[Envelope]:
        return [decode_envelope(frame) for frame in self.frames(count, timeout_s)]

    def nothing_more(self, wait_s: float = 0.2) -> bool:
        """True when no further frame arrives within `wait_s`."""
        return not self._socket.poll(int(wait_s * 1000))

    def close(self) -> None:
        self._socket.close(linger=0)
        self._context.term()


@pytest.fixture
def endpoint(tmp_path: Path) -> str:
    """A private ipc endpoint; short enough for the 107-byte socket path limit."""
    path = tmp_path / "e.sock"
    assert len(str(path)) < 100
    return f"ipc://{path}"


@pytest.fixture
def peer(endpoint: str) -> Iterator[Peer]:
    reader = Peer(endpoint)
    try:
        yield reader
    finally:
        reader.close()


@pytest.fixture
def publisher_env(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> str:
    """Point the shared publisher at the test's endpoint, as an operator would."""
    monkeypatch.setenv("FORWARDER_ENDPOINT", endpoint)
    return endpoint


@pytest.fixture(autouse=True)
def clean_publisher(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No emitter setting leaks in from the outside, and no publisher from one test to the next."""
    for name in list(os.environ):
        if name.startswith(SETTING_PREFIXES):
            monkeypatch.delenv(name)
    EventPublisherFactory.reset()
    try:
        yield
    finally:
        EventPublisherFactory.reset()
