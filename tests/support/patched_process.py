"""A process patched as gunicorn's eventlet or gevent worker is, publishing with no forwarder.

Run as `python -m tests.support.patched_process MODEL ENDPOINT SNDHWM LINGER_MS`. MODEL is
eventlet, gevent, threads, or asyncio (an event loop publishing from a task and from a worker
thread at once). A ticker, green under patching, sleeps 1 ms at a time throughout, as any other
request would. The process prints one JSON line: how often it ticked while idle, while publishing
far more than the queues hold and while `close()` spent the linger, how long `close()` took, the
publisher's counters and the model the transport detected.
"""

from __future__ import annotations

import sys

MODEL = sys.argv[1] if __name__ == "__main__" else "threads"
if MODEL == "eventlet":
    import eventlet

    eventlet.monkey_patch()
elif MODEL == "gevent":
    from gevent import monkey

    monkey.patch_all()

import asyncio  # noqa: E402 - after the monkey-patching, as in a worker
import dataclasses  # noqa: E402
import json  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Awaitable  # noqa: E402
from typing import Any  # noqa: E402

from emitter.publisher import EventPublisher  # noqa: E402
from emitter.transport import PushTransport  # noqa: E402

PHASE_S = 0.5


class Ticker:
    """A green thread (under patching) counting 1 ms sleeps: it stops counting if the hub stops."""

    def __init__(self) -> None:
        self.ticks = 0
        self.running = True
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while self.running:
            time.sleep(0.001)
            self.ticks += 1

    def during(self, action: object) -> tuple[int, float]:
        """Ticks counted while `action()` ran (or PHASE_S passed, for None), and its duration."""
        before, started = self.ticks, time.monotonic()
        if callable(action):
            action()
        else:
            time.sleep(PHASE_S)
        return self.ticks - before, time.monotonic() - started


class Flood:
    """Far more publishes than the queues hold, 100 at a time with a 1 ms pause, for PHASE_S."""

    def __init__(self, publisher: EventPublisher) -> None:
        self.publisher = publisher
        self.offered = 0

    def batch(self) -> None:
        for _ in range(100):
            self.publisher.emit("order_event", {"seq": self.offered, "pad": "x" * 200})
            self.offered += 1

    def run(self) -> None:
        deadline = time.monotonic() + PHASE_S
        while time.monotonic() < deadline:
            self.batch()
            time.sleep(0.001)

    async def run_async(self) -> None:
        deadline = time.monotonic() + PHASE_S
        while time.monotonic() < deadline:
            self.batch()
            await asyncio.sleep(0.001)


Phases = tuple[tuple[int, float], tuple[int, float], tuple[int, float], int]


def with_threads(publisher: EventPublisher) -> Phases:
    """Idle, flooding and closing while the ticker thread (green under patching) counts."""
    ticker = Ticker()
    time.sleep(0.1)
    flood = Flood(publisher)
    phases = ticker.during(None), ticker.during(flood.run), ticker.during(publisher.close)
    ticker.running = False
    return (*phases, flood.offered)


async def with_asyncio(publisher: EventPublisher) -> Phases:
    """An asyncio app: a ticking task, publishes from the loop and from a worker thread at once."""
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.001)
            ticks += 1

    async def during(action: Awaitable[Any]) -> tuple[int, float]:
        before, started = ticks, time.monotonic()
        await action
        return ticks - before, time.monotonic() - started

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0.1)
    in_loop, in_thread = Flood(publisher), Flood(publisher)
    idle = await during(asyncio.sleep(PHASE_S))
    flood = await during(asyncio.gather(in_loop.run_async(), asyncio.to_thread(in_thread.run)))
    close = await during(asyncio.to_thread(publisher.close))
    ticker.cancel()
    return idle, flood, close, in_loop.offered + in_thread.offered


def main() -> None:
    endpoint, hwm, linger_ms = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    transport = PushTransport(endpoint, hwm=hwm, linger_ms=linger_ms)
    publisher = EventPublisher(transport)
    in_asyncio = MODEL == "asyncio"
    phases = asyncio.run(with_asyncio(publisher)) if in_asyncio else with_threads(publisher)
    (idle_ticks, idle_s), (flood_ticks, flood_s), (close_ticks, close_s), offered = phases
    print(
        json.dumps(
            {
                "model": transport.model,
                "idle_ticks_per_s": idle_ticks / idle_s,
                "flood_ticks_per_s": flood_ticks / flood_s,
                "close_ticks_per_s": close_ticks / close_s,
                "close_s": close_s,
                "offered": offered,
                "stats": dataclasses.asdict(publisher.stats()),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
