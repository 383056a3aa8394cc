"""`openalgo-forwarder keygen DIR`: CURVE keys for a tcp:// endpoint, and the settings to use."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Final

from forwarder.curve import keygen

__all__ = ["HELP", "add_arguments", "run"]

HELP: Final = (
    "write CURVE keys for a tcp:// endpoint: the forwarder's, each emitter's, and the clients file "
    "listing the emitters' public keys; existing files are kept"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", type=Path, help="where to write them (made 0700)")
    parser.add_argument(
        "--client",
        action="append",
        metavar="NAME",
        help="an emitter to make keys for (repeatable; default: one named emitter)",
    )


def run(args: argparse.Namespace) -> int:
    """Print the setting each side needs, one line each; exit status 0."""
    for line in keygen(args.directory, args.client or ["emitter"]):
        print(line)
    return 0
