"""The logs viewer reading lines written by the daemon's own JSON logging."""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from forwarder.commands.logs import add_arguments, follow, run
from forwarder.log_setup import configure

ROOT = Path(__file__).resolve().parents[3]
TRACEBACK = 'Traceback (most recent call last):\n  File "x.py", line 1\nValueError: bad'


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="openalgo-forwarder logs")
    add_arguments(parser)
    return parser.parse_args(list(argv))


def view(*argv: str, stdin: str = "") -> list[str]:
    out = io.StringIO()
    assert run(parse(*argv), out=out, stdin=io.StringIO(stdin)) == 0
    return out.getvalue().splitlines()


@pytest.fixture
def daemon_log(tmp_path) -> Iterator[tuple[structlog.typing.FilteringBoundLogger, Path]]:
    """A logger configured exactly as the daemon's, writing JSON lines to a file."""
    path = tmp_path / "forwarder.log"
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    with path.open("w", encoding="utf-8") as stream:
        configure(logging.DEBUG, "json", stream)
        try:
            yield structlog.get_logger("forwarder.test"), path
        finally:
            structlog.reset_defaults()
            root.handlers[:] = handlers
            root.setLevel(level)
            for name in ("kafka", "socketio", "engineio", "urllib3", "websocket"):
                logging.getLogger(name).setLevel(logging.NOTSET)


@pytest.fixture
def sample(daemon_log) -> Path:
    """A day in the life: batches, a retry, a dead letter with a nested order id, a crash."""
    log, path = daemon_log
    log.debug("frame_received", event_id="e01")
    log.info("batch_delivered", sink="kafka", count=3, first_id="e01", last_id="e03")
    log.info("batch_delivered", sink="socketio", count=1, event_ids=["e02"])
    log.warning("sink_retry", sink="kafka", error="broker unreachable", delay_s=0.4)
    log.error(
        "event_dead_lettered",
        sink="kafka",
        event_id="e07",
        user_id="trader1",
        data={"symbol": "SBIN-EQ", "orderid": "ORD123"},
    )
    log.info("order_seen", orderid=987, user_id="trader2")
    with path.open("a", encoding="utf-8") as raw:
        raw.write(TRACEBACK + "\n")
        raw.write("[1, 2]\n")
        raw.write("{not json\n")
    return path


def events(lines: list[str]) -> list[str]:
    """The event names of the rendered lines (third column); other lines as they are."""
    return [line.split()[2] if line[:1].isdigit() else line for line in lines]


PASSTHROUGH = [*TRACEBACK.splitlines(), "[1, 2]", "{not json"]
LOGS_SCRIPT = """
import argparse, signal, sys
from forwarder.commands.logs import add_arguments, run
signal.signal(signal.SIGINT, signal.default_int_handler)
parser = argparse.ArgumentParser()
add_arguments(parser)
sys.exit(run(parser.parse_args(sys.argv[1:])))
"""
"""`openalgo-forwarder logs` as the CLI will mount it, with Ctrl-C delivered as at a terminal."""


class TestFilters:
    def test_no_filter_shows_everything(self, sample):
        """Every JSON line is rendered and every other line is kept, in order."""
        assert events(view(str(sample))) == [
            "frame_received",
            "batch_delivered",
            "batch_delivered",
            "sink_retry",
            "event_dead_lettered",
            "order_seen",
            *PASSTHROUGH,
        ]

    def test_minimum_level(self, sample):
        """--level warning keeps warnings and errors, and lines that are not JSON."""
        assert events(view(str(sample), "--level", "WARNING")) == [
            "sink_retry",
            "event_dead_lettered",
            *PASSTHROUGH,
        ]

    def test_sink(self, sample):
        """--sink keeps the lines about that sink only."""
        assert events(view(str(sample), "--sink", "socketio")) == ["batch_delivered", *PASSTHROUGH]
        kafka = view(str(sample), "--sink", "kafka")
        assert events(kafka)[:3] == ["batch_delivered", "sink_retry", "event_dead_lettered"]

    @pytest.mark.parametrize(
        ("event_id", "expected"),
        [
            ("e01", ["frame_received", "batch_delivered"]),
            ("e03", ["batch_delivered"]),
            ("e02", ["batch_delivered"]),
            ("e07", ["event_dead_lettered"]),
            ("e99", []),
        ],
        ids=["event-and-first", "last", "listed", "dead-letter", "absent"],
    )
    def test_event_id(self, sample, event_id, expected):
        """--event-id finds the event, batches starting or ending with it, and id lists."""
        assert events(view(str(sample), "--event-id", event_id)) == [*expected, *PASSTHROUGH]

    def test_order_id_nested(self, sample):
        """--order-id finds an order id inside the event's data."""
        lines = view(str(sample), "--order-id", "ORD123")
        assert events(lines) == ["event_dead_lettered", *PASSTHROUGH]

    def test_order_id_as_number(self, sample):
        """An order id logged as a number matches the same digits typed on the command line."""
        assert events(view(str(sample), "--order-id", "987")) == ["order_seen", *PASSTHROUGH]

    def test_user(self, sample):
        """--user matches user_id."""
        assert events(view(str(sample), "--user", "trader2")) == ["order_seen", *PASSTHROUGH]

    def test_filters_combine(self, sample):
        """Several filters must all hold."""
        assert events(view(str(sample), "--sink", "kafka", "--user", "trader1")) == [
            "event_dead_lettered",
            *PASSTHROUGH,
        ]
        assert events(view(str(sample), "--sink", "socketio", "--user", "trader1")) == PASSTHROUGH


class TestRendering:
    def test_plain_line(self, daemon_log):
        """timestamp, padded level and event, then key=value in logged order; spaces quoted."""
        log, path = daemon_log
        log.warning("sink_retry", sink="kafka", error="broker unreachable", attempt=2, tags=["a"])
        [line] = view(str(path))
        stamp = json.loads(path.read_text())["timestamp"]
        assert line == (
            f"{stamp} WARNING  sink_retry               "
            'sink=kafka error="broker unreachable" attempt=2 tags=["a"]'
        )

    def test_traceback_below_its_line(self, daemon_log):
        """An exception logged by the daemon is printed indented under its event."""
        log, path = daemon_log
        try:
            raise ValueError("record too large")
        except ValueError:
            log.exception("sink_failed", sink="kafka")
        lines = view(str(path))
        assert lines[0].split()[1:] == ["ERROR", "sink_failed", "sink=kafka"]
        assert lines[1] == "    Traceback (most recent call last):"
        assert lines[-1] == "    ValueError: record too large"

    def test_control_characters_from_events_are_escaped(self, daemon_log):
        """An event id or a field taken from a frame cannot drive the terminal: every control
        and format character in any value, key, event name or traceback is shown escaped, and
        a line that is not JSON too."""
        log, path = daemon_log
        hostile = "ev-\x1b]0;owned\x07\x1b[2J\x9b\u202e"
        log.warning("frame_dead_lettered", event_id=hostile, reason=f"bad {hostile}")
        log.warning(f"event{hostile}", **{f"key{hostile}": 1})
        try:
            raise ValueError(hostile)
        except ValueError:
            log.exception("sink_failed")
        with path.open("a") as raw:
            raw.write(f"not json {hostile}\n")
        text = "\n".join(view(str(path)))
        assert [c for c in text if c in "\x1b\x07\x9b\u202e"] == []
        assert text.count("ev-\\x1b]0;owned\\x07") >= 4

    def test_standard_input(self, sample):
        """- reads the same lines from standard input, as piped from journalctl -o cat."""
        assert view("-", "--sink", "socketio", stdin=sample.read_text()) == view(
            str(sample), "--sink", "socketio"
        )

    def test_reader_gone(self, tmp_path):
        """A reader that stops early (`| head -1`) ends the viewer quietly with status 0."""
        path = tmp_path / "forwarder.log"
        path.write_text("".join(record("batch_delivered", n=n) for n in range(50_000)))
        with subprocess.Popen(
            [sys.executable, "-c", LOGS_SCRIPT, str(path)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        ) as process:
            assert process.stdout is not None
            assert process.stderr is not None
            assert b"batch_delivered" in process.stdout.readline()
            process.stdout.close()
            try:
                assert process.wait(timeout=60) == 0
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()
            assert process.stderr.read() == b""

    def test_missing_file(self, tmp_path, capsys):
        """A file that cannot be opened is reported on stderr with status 1."""
        missing = tmp_path / "nope.log"
        assert run(parse(str(missing)), out=io.StringIO()) == 1
        assert capsys.readouterr().err == (
            f"openalgo-forwarder logs: cannot read {missing}: No such file or directory\n"
        )


@pytest.fixture
def terminal() -> Iterator[tuple[io.TextIOWrapper, int]]:
    """A real pseudo-terminal: what the viewer writes to its slave end is read from the master."""
    master, slave = os.openpty()
    out = open(slave, "w", encoding="utf-8")  # noqa: SIM115 - closed in the finally below
    try:
        yield out, master
    finally:
        out.close()
        os.close(master)


def written(out: io.TextIOWrapper, master: int) -> str:
    out.flush()
    return os.read(master, 65536).decode()


class TestColour:
    def test_colour_on_a_terminal(self, sample, terminal, monkeypatch):
        """On a terminal the level and keys are coloured."""
        monkeypatch.delenv("NO_COLOR", raising=False)
        out, master = terminal
        assert run(parse(str(sample), "--level", "error"), out=out) == 0
        text = written(out, master)
        assert "\x1b[31mERROR" in text
        assert "\x1b[36msink\x1b[0m=kafka" in text

    def test_no_color_flag(self, sample, terminal, monkeypatch):
        """--no-color keeps a terminal's output plain."""
        monkeypatch.delenv("NO_COLOR", raising=False)
        out, master = terminal
        assert run(parse(str(sample), "--no-color"), out=out) == 0
        assert "\x1b[" not in written(out, master)

    def test_no_color_environment(self, sample, terminal, monkeypatch):
        """NO_COLOR in the environment is honoured as everywhere else."""
        monkeypatch.setenv("NO_COLOR", "1")
        out, master = terminal
        assert run(parse(str(sample)), out=out) == 0
        assert "\x1b[" not in written(out, master)

    def test_plain_off_a_terminal(self, sample):
        """Into a pipe or file nothing is coloured."""
        assert not any("\x1b[" in line for line in view(str(sample)))


def record(event: str, **fields: object) -> str:
    return json.dumps({"event": event, "level": "info", "timestamp": "t", **fields}) + "\n"


class TestFollow:
    def test_growing_truncated_and_replaced_file(self, tmp_path):
        """Appended lines arrive, a half-written line waits for its end, truncation and rotation
        start over."""
        path = tmp_path / "forwarder.log"
        path.write_text("one\n")
        seen: list[str] = []
        deadline = time.monotonic() + 30
        wanted = ["one", "two", "three", "four", "five"]

        def write() -> None:
            steps = [
                (1, lambda: append(path, "two\nthr")),
                (2, lambda: append(path, "ee\n")),
                (3, lambda: path.write_text("four\n")),
                (4, lambda: replace(path, "five\n")),
            ]
            for count, step in steps:
                wait_for(seen, count, deadline)
                step()

        writer = threading.Thread(target=write)
        writer.start()
        try:
            for line in follow(
                path, poll_s=0.02, stop=lambda: seen == wanted or time.monotonic() > deadline
            ):
                seen.append(line)
        finally:
            writer.join(timeout=30)
        assert seen == wanted

    def test_follow_command_until_interrupted(self, tmp_path):
        """`logs --follow` prints lines appended after it started and exits 0 on Ctrl-C."""
        path = tmp_path / "forwarder.log"
        path.write_text(record("started", sink="kafka"))
        lines: queue.Queue[str] = queue.Queue()
        with subprocess.Popen(
            [sys.executable, "-c", LOGS_SCRIPT, str(path), "--follow", "--sink", "kafka"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        ) as process:

            def read() -> None:
                for line in process.stdout:
                    lines.put(line)

            reader = threading.Thread(target=read)
            reader.start()
            try:
                assert lines.get(timeout=30).split()[2] == "started"
                append(path, record("skipped", sink="socketio") + record("appended", sink="kafka"))
                assert lines.get(timeout=30).split()[2] == "appended"
                process.send_signal(signal.SIGINT)
                assert process.wait(timeout=30) == 0
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()
                reader.join(timeout=30)
        assert lines.empty()


def append(path: Path, text: str) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(text)


def replace(path: Path, text: str) -> None:
    """What logrotate does: move the file away and start a new one under the same name."""
    path.rename(path.with_suffix(".1"))
    path.write_text(text)


def wait_for(seen: list[str], count: int, deadline: float) -> None:
    """Until the follower has yielded `count` lines, so each change meets a reader that is idle."""
    while len(seen) < count and time.monotonic() < deadline:
        time.sleep(0.01)
