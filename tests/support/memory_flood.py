"""A fresh process that floods the publisher with large events while no forwarder listens.

Run as `python -m tests.support.memory_flood ENDPOINT QUEUE_MAX_BYTES MAX_EVENT_BYTES
EVENT_BYTES COUNT`. The count limit is set far above COUNT, so only the byte limits can hold the
process back. It prints one JSON line: the resident memory before the flood (payload built,
publisher warm) and after it, the peak, and the publisher's counters.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time

from emitter.publisher import EventPublisher
from emitter.transport import PushTransport


def _status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field))


def main() -> None:
    endpoint = sys.argv[1]
    queue_max_bytes, max_event_bytes, event_bytes, count = map(int, sys.argv[2:6])
    transport = PushTransport(
        endpoint,
        hwm=10 * count,
        max_bytes=queue_max_bytes,
        max_event_bytes=max_event_bytes,
        linger_ms=0,
    )
    publisher = EventPublisher(transport)
    blob = "x" * event_bytes
    publisher.emit("warm_up", {"blob": ""})
    time.sleep(0.5)  # the pump started and opened its socket: ZeroMQ's threads are not counted
    before = _status_kib("VmRSS:")
    accepted = 0
    for seq in range(count):
        accepted += publisher.emit("analyzer_update", {"blob": blob})
        if seq % 10 == 9:
            time.sleep(0.001)  # as requests come: the pump meanwhile fills ZeroMQ's queue
    after = _status_kib("VmRSS:")
    peak = _status_kib("VmHWM:")
    stats = dataclasses.asdict(publisher.stats())
    publisher.close()
    result = {"before_kib": before, "after_kib": after, "peak_kib": peak, "accepted": accepted}
    print(json.dumps(result | {"stats": stats}), flush=True)


if __name__ == "__main__":
    main()
