"""Frames and emitting processes the forwarder tests feed it with."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import msgspec

from emitter.contract import encode_envelope
from emitter.publisher import publisher_from_env
from harness.events import numbered, push_frames
from harness.processes import ROOT

GARBAGE = [
    b"\x8f\x00\x13\x37 random bytes \xfe\xff",
    encode_envelope(numbered(999_999))[:-7],
    msgspec.msgpack.encode([2, "ev-next-schema", 1, "order_event", None, "u", "u", {}, True]),
    b"",
]
"""Frames a forwarder must refuse: random bytes, cut msgpack, a future schema, an empty frame."""


def push_envelopes(endpoint: str, prefix: str, count: int) -> None:
    """Entry point of an emitting process: `count` envelopes with ids `prefix-000000`..."""
    push_frames(endpoint, (encode_envelope(numbered(i, prefix=prefix)) for i in range(count)))


@contextmanager
def emitting_processes(
    target: Callable[..., None], calls: Iterable[tuple[str | int, ...]]
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """One process per call of `target` (a function of this module), as gunicorn workers are
    separate processes; each is waited for (killed if it hangs) on the way out.

    Plain subprocesses, not multiprocessing: its spawn context starts a resource tracker process
    that outlives the test session."""
    started = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                f"from tests.support.frames import {target.__name__} as f; f(*{args!r})",
            ],
            cwd=ROOT,
        )
        for args in calls
    ]
    try:
        yield started
    finally:
        for process in started:
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def publish_orders(endpoint: str, user: str, count: int) -> None:
    """Entry point of an emitting process using the real publisher: `count` orders of `user`."""
    publisher = publisher_from_env({"FORWARDER_ENDPOINT": endpoint})
    try:
        for seq in range(count):
            if not publisher.publish_order_event(
                user, "SBIN-EQ", "BUY", f"{user}-{seq}", "live", exchange="NSE", seq=seq
            ):
                raise RuntimeError(f"the publisher dropped {user}-{seq}")
    finally:
        publisher.close()
