"""`openalgo-forwarder run`: forward events until SIGTERM or SIGINT."""

from __future__ import annotations

import signal
import sys
from types import FrameType
from typing import Final, TextIO, cast

from forwarder import log_setup
from forwarder.ops.notify import Notifier
from forwarder.service import Forwarder
from forwarder.settings import Settings
from forwarder.sinks.table import build_sinks, noisy_libraries

__all__ = ["HELP", "run"]

HELP: Final = "forward events until SIGTERM or SIGINT"


def run(settings: Settings) -> int:
    """Exit status 0 once the service has stopped on a signal and drained what it could."""
    log_setup.configure(
        settings.log_level_number,
        settings.log_format,
        secrets=settings.secrets,
        wire=settings.log_wire,
        quiet=noisy_libraries(settings),
    )
    # A traceback Python prints itself (an uncaught error in a thread) is redacted too.
    sys.stderr = cast(
        TextIO, log_setup.RedactingStream(sys.stderr, log_setup.Redactor(settings.secrets))
    )
    forwarder = Forwarder(settings, build_sinks(settings), notifier=Notifier.from_env())

    def request_stop(signum: int, frame: FrameType | None) -> None:
        forwarder.stop()
        for name in (signal.SIGTERM, signal.SIGINT):
            signal.signal(name, signal.SIG_DFL)  # a second signal ends the process at once

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    forwarder.run()
    return 0
