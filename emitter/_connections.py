"""Keep the connection to the forwarder open at close until the forwarder has read everything.

`Context.term()` returns once ZeroMQ has written its queue into the kernel, and closes the
connection right after. A forwarder whose own receive queue is full at that moment (it is behind,
reading at its own pace) stops reading the connection; when libzmq then sees the peer hang up, it
drops whatever the kernel still held for it: with a reader at 30 us a frame, 302 and 1,522 of
10,000 frames in two runs. So the pump follows its socket's connections through ZeroMQ's monitor,
holds a duplicate of each one's descriptor across `term()`, and lets go only once the kernel says
the peer has read every byte (or the linger ran out).
"""

from __future__ import annotations

import contextlib
import os
import struct
from typing import Final

import zmq

__all__ = ["Connections", "unread_bytes"]

_EVENTS: Final = zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED
_EVENT: Final = struct.Struct("=hi")
"""A monitor message's first frame: the event, then its value (the descriptor, for these two)."""
_INT: Final = struct.Struct("i")


try:
    from fcntl import ioctl
    from termios import TIOCOUTQ
except ImportError:  # Windows has neither, macOS no TIOCOUTQ: close then waits for nothing

    def unread_bytes(fd: int) -> int:
        """Nothing tells here what the peer has read: nothing to wait for."""
        return 0

else:

    def unread_bytes(fd: int) -> int:
        """Bytes sent on this socket that the peer has not read yet; 0 when unknown."""
        try:
            return int(_INT.unpack(ioctl(fd, TIOCOUTQ, bytes(_INT.size)))[0])
        except OSError:
            return 0


class Connections:
    """The descriptors of a ZeroMQ socket's live connections, read from its monitor."""

    def __init__(self, socket: zmq.Socket[bytes]) -> None:
        self._socket = socket
        self._monitor = socket.get_monitor_socket(_EVENTS)
        self._fds: set[int] = set()

    def update(self) -> None:
        """Apply the events ZeroMQ reported since the last call; never waits."""
        monitor = self._monitor
        while int(monitor.get(zmq.EVENTS)) & zmq.POLLIN:
            header, _endpoint = monitor.recv_multipart()
            event, fd = _EVENT.unpack(header)
            if event == zmq.EVENT_CONNECTED:
                self._fds.add(fd)
            else:
                self._fds.discard(fd)

    def hold(self) -> list[int]:
        """Duplicates of the live connections' descriptors: they stay open until `release`."""
        self.update()
        held = []
        for fd in self._fds:
            with contextlib.suppress(OSError):  # closed by ZeroMQ a moment ago
                held.append(os.dup(fd))
        return held

    def close(self) -> None:
        """Stop monitoring; must happen before the context is terminated."""
        with contextlib.suppress(zmq.ZMQError):
            self._socket.disable_monitor()
        self._monitor.close(linger=0)


def release(held: list[int]) -> None:
    """Close what `Connections.hold` returned: the forwarder then sees the hang-up."""
    for fd in held:
        with contextlib.suppress(OSError):
            os.close(fd)
