"""`openalgo-forwarder backlog discard SINK`: drop, on purpose, what the buffer keeps for a sink.

A sink taken out of ORDER_EVENT_MODE keeps its events in the disk buffer until it is configured
again; this is the operator's way of saying they are not wanted. It needs the forwarder stopped:
it takes the state directory's lock, as the forwarder does.
"""

from __future__ import annotations

import argparse
import sys
from typing import Final

import structlog

from forwarder import log_setup
from forwarder.settings import Settings
from forwarder.state_lock import StateLock
from forwarder.store import BUFFER_FILE, discard

__all__ = ["HELP", "add_arguments", "run"]

HELP: Final = "drop what the disk buffer keeps for a sink taken out of ORDER_EVENT_MODE"

log = structlog.get_logger("forwarder.backlog")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(title="actions", required=True, dest="action", metavar="ACTION")
    dropping = actions.add_parser(
        "discard",
        help="drop every event the disk buffer keeps for SINK; the forwarder must be stopped",
    )
    dropping.add_argument("sink", metavar="SINK", help="kafka or socketio, as `check` names it")


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Exit status 0 once the sink holds nothing; the count dropped is printed and logged."""
    log_setup.configure(settings.log_level_number, settings.log_format, stream=sys.stderr)
    path = settings.state_dir / BUFFER_FILE
    if not path.exists():
        print(f"{path} does not exist: nothing waits for {args.sink}")
        return 0
    with StateLock(settings.state_dir):
        count = discard(path, args.sink)
    log.warning("backlog_discarded", sink=args.sink, discarded=count, path=str(path))
    print(f"discarded {count:,} events waiting for {args.sink} in {path}")
    return 0
