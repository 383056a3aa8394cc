"""A forwarder stand-in in its own process that spends a fixed time on every frame it reads.

Run as `python -m tests.support.slow_reader ENDPOINT MICROSECONDS`. It binds a PULL socket,
prints `ready`, and reads, busy for MICROSECONDS per frame as a forwarder validating and storing
it would be. Once its stdin is closed and no frame came for a second, it prints every frame it
read, in order, as one JSON list of strings, and exits.
"""

from __future__ import annotations

import json
import select
import sys
import time

import zmq

QUIET_S = 1.0


def main() -> None:
    endpoint, per_frame_s = sys.argv[1], int(sys.argv[2]) / 1e6
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    pull = context.socket(zmq.PULL)
    pull.bind(endpoint)
    print("ready", flush=True)
    received: list[str] = []
    stdin_open = True
    last_frame = time.monotonic()
    while stdin_open or time.monotonic() - last_frame < QUIET_S:
        if pull.poll(10):
            received.append(pull.recv().decode())
            busy_until = time.perf_counter() + per_frame_s
            while time.perf_counter() < busy_until:
                pass
            last_frame = time.monotonic()
        elif stdin_open and select.select([sys.stdin], [], [], 0)[0]:
            stdin_open = bool(sys.stdin.read())
    print(json.dumps(received), flush=True)
    pull.close(linger=0)
    context.term()


if __name__ == "__main__":
    main()
