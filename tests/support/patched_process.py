"""A process patched as gunicorn's eventlet or gevent worker is, publishing with no forwarder.

Run as `python -m tests.support.patched_process MODEL ENDPOINT SNDHWM LINGER_MS` (MODEL:
eventlet, gevent or threads). A green ticker sleeps 1 ms at a time throughout, as any other
request would. The process prints one JSON line: how often it ticked while idle, while
publishing far more than the queues hold and while `close()` spent the linger, how long `close()`
took, the publisher's counters and the model the transport detected.
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

import dataclasses  # noqa: E402 - after the monkey-patching, as in a worker
import json  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

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


def main() -> None:
    endpoint, hwm, linger_ms = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    transport = PushTransport(endpoint, hwm=hwm, linger_ms=linger_ms)
    publisher = EventPublisher(transport)
    ticker = Ticker()
    time.sleep(0.1)
    idle_ticks, idle_s = ticker.during(None)

    offered = 0

    def flood() -> None:
        nonlocal offered
        deadline = time.monotonic() + PHASE_S
        while time.monotonic() < deadline:
            for _ in range(100):
                publisher.emit("order_event", {"seq": offered, "pad": "x" * 200}, user_id="u")
                offered += 1
            time.sleep(0.001)

    flood_ticks, flood_s = ticker.during(flood)
    close_ticks, close_s = ticker.during(publisher.close)
    ticker.running = False
    print(
        json.dumps(
            {
                "model": transport.model,
                "idle_ticks_per_s": idle_ticks / idle_s,
                "flood_ticks_per_s": flood_ticks / flood_s,
                "close_ticks_per_s": close_ticks / close_s if close_s else None,
                "close_s": close_s,
                "offered": offered,
                "stats": dataclasses.asdict(publisher.stats()),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
