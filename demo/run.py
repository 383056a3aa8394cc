"""The demo from start to finish: services up, a trading session, what arrived where, all down."""

from __future__ import annotations

import os
import secrets
import signal
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from types import FrameType
from typing import Final

from demo.console import say
from demo.consumer import read_topic
from demo.forwarder_log import log_printer
from demo.report import Outcome, match
from demo.session import trade
from emitter.publisher import PublisherStats, get_event_publisher
from harness.broker import KafkaBroker
from harness.browser import browser_tab
from harness.forwarder import ForwarderProcess, forwarder_env
from harness.processes import StartError
from harness.relay_app import RelayServer

__all__ = ["Interrupted", "main"]

TOPIC: Final = "from_openalgo_order_events"
_PACE_S: Final = 0.25
"""Between two trader actions, so the forwarder's log can be followed as it delivers."""
_ARRIVAL_TIMEOUT_S: Final = 20.0
_SHUTDOWN_TIMEOUT_S: Final = 5
_FORWARDER_GRACE_S: Final = _SHUTDOWN_TIMEOUT_S + 10.0
"""SIGKILL only once the forwarder had its whole shutdown timeout to deliver what it holds."""


class Interrupted(BaseException):
    """SIGINT or SIGTERM reached the demo: unwind, stopping everything it started."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """Raise once; a second Ctrl-C must not cut short the clean-up the first one started."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Interrupted(signum)


def _announce(line: str) -> None:
    """Each process the demo starts and stops, with its pid."""
    say(f"demo: {line}")


def main() -> int:
    """0 when every event arrived where it should, 1 when not, 128 + N on signal N."""
    started = time.monotonic()
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        outcome, stats = _run()
    except Interrupted as exc:
        say(f"demo: interrupted by {exc}; everything it started is stopped")
        return 128 + exc.signum
    except StartError as exc:
        say(f"demo: {exc}")
        return 1
    elapsed_s = time.monotonic() - started
    say()
    for line in [*outcome.table(), "", *outcome.summary(stats, elapsed_s)]:
        say(line)
    return 0 if outcome.complete else 1


def _run() -> tuple[Outcome, PublisherStats]:
    """Everything is stopped, and the temporary directory removed, by the time this returns."""
    secret = secrets.token_urlsafe(32)
    with ExitStack() as stack:
        run_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="openalgo-demo-")))
        bootstrap = stack.enter_context(KafkaBroker(report=_announce)).bootstrap
        say(f"demo: Kafka-protocol broker (tansu, in memory) on {bootstrap}")
        app_url = stack.enter_context(
            RelayServer(secret, run_dir / "app.log", report=_announce)
        ).url
        say(f"demo: Socket.IO app with the relay installed on {app_url}")
        env = forwarder_env(
            run_dir,
            short_retries=False,
            ORDER_EVENT_MODE="SOCKETIO,KAFKA",
            KAFKA_BOOTSTRAP_SERVERS=bootstrap,
            KAFKA_ORDER_EVENTS_TOPIC=TOPIC,
            SOCKETIO_URL=app_url,
            SOCKETIO_RELAY_SECRET=secret,
            FORWARDER_SHUTDOWN_TIMEOUT_S=str(_SHUTDOWN_TIMEOUT_S),
        )
        forwarder = ForwarderProcess(
            env, grace_s=_FORWARDER_GRACE_S, on_line=log_printer(), report=_announce
        )
        stack.callback(forwarder.stop)
        forwarder.start()
        tab = stack.enter_context(browser_tab(app_url))
        say(f"demo: a browser tab is connected to {app_url} on /; trading starts")
        # This process plays the trading app, whose publisher reads its settings from the
        # environment (get_event_publisher(), as OpenAlgo calls it, and the bus bridge too).
        os.environ["FORWARDER_ENDPOINT"] = env["FORWARDER_ENDPOINT"]
        publisher = get_event_publisher()
        published = trade(publisher, pace_s=_PACE_S)
        publisher.close()
        deadline = time.monotonic() + _ARRIVAL_TIMEOUT_S
        arrivals = tab.collect(sum(item.browser for item in published), _ARRIVAL_TIMEOUT_S)
        records = read_topic(bootstrap, TOPIC, len(published), deadline)
        say("demo: trading done, arrivals read; stopping the forwarder, the app and the broker")
    return match(published, records, arrivals), publisher.stats()
