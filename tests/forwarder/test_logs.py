"""Logging set-up: JSON lines off a terminal, console colour on one, levels, and the throttle."""

from __future__ import annotations

import io
import itertools
import json
import logging
import os
import re
from datetime import datetime

import pytest
import structlog

from forwarder.logs import Throttle, configure


@pytest.fixture(autouse=True)
def restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        structlog.reset_defaults()
        root.handlers[:] = handlers
        root.setLevel(level)
        for name in ("kafka", "socketio", "engineio", "urllib3", "websocket"):
            logging.getLogger(name).setLevel(logging.NOTSET)


def json_lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


class TestConfigure:
    def test_auto_writes_json_lines_with_iso_utc_timestamps_off_a_terminal(self):
        """Under systemd stdout is no terminal: each event becomes one parseable JSON line."""
        stream = io.StringIO()
        configure(logging.INFO, "auto", stream)
        structlog.get_logger().info("batch_delivered", sink="kafka", count=3)
        [line] = json_lines(stream)
        assert line["event"] == "batch_delivered"
        assert line["level"] == "info"
        assert (line["sink"], line["count"]) == ("kafka", 3)
        assert line["timestamp"].endswith("Z")
        assert datetime.fromisoformat(line["timestamp"]).utcoffset().total_seconds() == 0

    def test_events_below_the_level_are_dropped(self):
        """LOG_LEVEL=WARNING keeps the per-batch info lines out of the journal."""
        stream = io.StringIO()
        configure(logging.WARNING, "json", stream)
        log = structlog.get_logger()
        log.info("batch_delivered")
        log.warning("sink_retry")
        assert [line["event"] for line in json_lines(stream)] == ["sink_retry"]

    def test_an_exception_is_rendered_into_the_json_line(self):
        """A traceback stays inside its one JSON line, so journald keeps it together."""
        stream = io.StringIO()
        configure(logging.INFO, "json", stream)
        try:
            raise RuntimeError("sink exploded")
        except RuntimeError:
            structlog.get_logger().exception("sink_failed", sink="memory")
        [line] = json_lines(stream)
        assert "RuntimeError: sink exploded" in line["exception"]
        assert "Traceback" in line["exception"]

    def test_standard_library_logging_goes_through_the_same_renderer(self):
        """Other code logging with logging gets JSON lines too."""
        stream = io.StringIO()
        configure(logging.INFO, "json", stream)
        logging.getLogger("forwarder.plugin").warning("disk at %d%%", 91)
        logging.getLogger("forwarder.plugin").debug("details")
        [line] = json_lines(stream)
        assert line["event"] == "disk at 91%"
        assert line["logger"] == "forwarder.plugin"
        assert line["level"] == "warning"

    def test_client_library_connection_noise_shows_only_at_debug(self):
        """kafka-python logs each failed connect; sink_retry already reports it once per attempt."""
        quiet, verbose = io.StringIO(), io.StringIO()
        configure(logging.INFO, "json", quiet)
        logging.getLogger("kafka.net.manager").error("Connection failed: ECONNREFUSED")
        configure(logging.DEBUG, "json", verbose)
        logging.getLogger("kafka.net.manager").error("Connection failed: ECONNREFUSED")
        assert json_lines(quiet) == []
        assert [line["logger"] for line in json_lines(verbose)] == ["kafka.net.manager"]

    def test_console_format_on_a_terminal_is_key_value_text(self):
        """On a terminal people read colour and key=value, not JSON."""
        primary, secondary = os.openpty()
        with open(primary, "rb", buffering=0) as reader, open(secondary, "w") as terminal:
            configure(logging.INFO, "auto", terminal)
            structlog.get_logger().info("forwarder_started", pid=42)
            terminal.flush()
            text = reader.read(4096).decode()
        assert "forwarder_started" in text
        assert "pid" in text
        assert "42" in text
        assert "\x1b[" in text
        assert not text.lstrip().startswith("{")

    def test_console_format_can_be_forced_off_a_terminal(self):
        """LOG_FORMAT=console is honoured even when output is piped."""
        stream = io.StringIO()
        configure(logging.INFO, "console", stream)
        structlog.get_logger().info("stats", received=5)
        assert "received=5" in re.sub(r"\x1b\[[0-9;]*m", "", stream.getvalue())
        with pytest.raises(json.JSONDecodeError):
            json.loads(stream.getvalue())


class TestThrottle:
    def test_one_line_per_interval_then_the_count_of_those_held_back(self):
        """A flood of bad frames yields one warning per interval that says how many it hid."""
        now = [0.0]
        throttle = Throttle(10, clock=lambda: now[0])
        first = throttle.ready()
        held = [throttle.ready() for _ in range(5)]
        now[0] = 10.0
        assert (first, held, throttle.ready(), throttle.ready()) == (0, [None] * 5, 5, None)

    def test_a_quiet_source_is_never_held_back(self):
        """Occasional lines all get through."""
        ticks = itertools.count(step=60)
        throttle = Throttle(10, clock=lambda: next(ticks))
        assert [throttle.ready() for _ in range(3)] == [0, 0, 0]
