"""The control socket over a real AF_UNIX stream socket, and the stats table it feeds."""

from __future__ import annotations

import socket
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from forwarder.commands.stats import format_duration, render_stats
from forwarder.ops.control import ControlError, ControlServer, control_path, query
from forwarder.stats import Snapshot
from tests.support.snapshots import sink_snapshot, snapshot


@pytest.fixture
def path(tmp_path) -> Path:
    return tmp_path / "run" / "control.sock"


@pytest.fixture
def current() -> list[Snapshot]:
    """What the server reports: the test replaces the one snapshot it holds."""
    return [snapshot()]


@pytest.fixture
def server(path, current) -> Iterator[ControlServer]:
    control = ControlServer(path, lambda: current[0])
    control.start()
    try:
        yield control
    finally:
        control.close()


@pytest.fixture
def raw_listener(tmp_path) -> Iterator[tuple[socket.socket, Path]]:
    """A listening socket that is not a forwarder: what it answers is up to the test."""
    where = tmp_path / "other.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(where))
    listener.listen()
    try:
        yield listener, where
    finally:
        listener.close()


class TestControlServer:
    def test_round_trip(self, server, path, current):
        """query returns the snapshot as the service holds it at that moment."""
        assert query(path) == snapshot()
        failing = sink_snapshot(retrying_since_s=4.5)
        current[0] = snapshot(received=9000, sinks={"kafka": failing})
        assert query(path) == current[0]

    def test_private_socket_in_private_directory(self, server, path):
        """The socket is 0600 and a directory it had to create is 0700."""
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700

    def test_group_readable_mode(self, tmp_path):
        """A wider mode is applied when asked for, e.g. to let the ipc socket's group read stats."""
        where = tmp_path / "control.sock"
        with ControlServer(where, snapshot, mode=0o660):
            assert stat.S_IMODE(where.stat().st_mode) == 0o660

    def test_close_removes_the_socket(self, path, current):
        """After close the file is gone and a query says nobody is listening."""
        control = ControlServer(path, lambda: current)
        control.start()
        control.close()
        assert not path.exists()
        with pytest.raises(ControlError, match="is it running"):
            query(path)

    def test_stale_socket_is_replaced(self, path, current):
        """A socket file left by a crashed forwarder does not stop the next one."""
        path.parent.mkdir()
        crashed = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        crashed.bind(str(path))
        crashed.close()
        with ControlServer(path, lambda: current[0]):
            assert query(path).pid == 4242

    def test_live_socket_is_not_stolen(self, server, path):
        """A second forwarder on the same path refuses to start and leaves the first answering."""
        with pytest.raises(ControlError, match="already answers"):
            ControlServer(path, snapshot).start()
        assert query(path).pid == 4242

    def test_close_keeps_a_successors_socket(self, path):
        """close does not remove a socket file that another server has put in its place."""
        first = ControlServer(path, snapshot)
        first.start()
        path.unlink()
        with ControlServer(path, lambda: snapshot(pid=7)):
            first.close()
            assert query(path).pid == 7

    def test_failing_snapshot_is_reported(self, tmp_path):
        """A snapshot that raises reaches the client as a ControlError, and the server goes on."""
        where = tmp_path / "control.sock"
        answers = iter([RuntimeError("counters locked"), snapshot()])

        def flaky() -> Snapshot:
            answer = next(answers)
            if isinstance(answer, Exception):
                raise answer
            return answer

        with ControlServer(where, flaky):
            with pytest.raises(ControlError, match="counters locked"):
                query(where)
            assert query(where).pid == 4242

    def test_unserialisable_snapshot_is_reported(self, tmp_path):
        """A value JSON cannot carry is named in the error the client gets."""
        where = tmp_path / "control.sock"
        with (
            ControlServer(where, lambda: snapshot(received={1, 2})),
            pytest.raises(ControlError, match="set is not JSON serializable"),
        ):
            query(where)

    def test_close_is_idempotent(self, path):
        """Closing twice, or a server never started, is harmless."""
        never = ControlServer(path, snapshot)
        never.close()
        control = ControlServer(path, snapshot)
        control.start()
        control.close()
        control.close()
        assert not path.exists()

    def test_unusable_path(self, tmp_path):
        """A path that cannot be bound (too long for AF_UNIX) fails start with that path."""
        where = tmp_path / ("x" * 120) / "control.sock"
        with pytest.raises(ControlError, match="cannot listen on"):
            ControlServer(where, snapshot).start()


class TestQuery:
    def test_nobody_listens(self, tmp_path):
        """A missing socket file gives an error that says to check the service."""
        with pytest.raises(ControlError) as caught:
            query(tmp_path / "control.sock")
        message = str(caught.value)
        assert "no forwarder is answering" in message
        assert "systemctl status openalgo-forwarder" in message

    def test_refused(self, tmp_path):
        """A socket file nobody listens on is reported the same way."""
        where = tmp_path / "control.sock"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as bound:
            bound.bind(str(where))
            with pytest.raises(ControlError, match="no forwarder is answering"):
                query(where)

    def test_not_a_stats_document(self, raw_listener):
        """An answer that is not a JSON object is refused."""
        listener, where = raw_listener

        def answer() -> None:
            for reply in (b"hello\n", b"[1, 2]\n"):
                connection, _ = listener.accept()
                with connection:
                    connection.sendall(reply)

        replier = threading.Thread(target=answer)
        replier.start()
        try:
            with pytest.raises(ControlError, match="not a stats document"):
                query(where)
            with pytest.raises(ControlError, match="not a stats document"):
                query(where)
        finally:
            replier.join(timeout=10)

    def test_silent_peer_times_out(self, raw_listener):
        """A peer that accepts and never answers costs the timeout, then a clear error."""
        _, where = raw_listener
        with pytest.raises(ControlError, match=r"did not answer .* within 0\.2 s"):
            query(where, timeout=0.2)


class TestControlPath:
    def test_beside_the_ipc_socket(self, tmp_path):
        """With an ipc endpoint the control socket shares its directory."""
        path = control_path("ipc:///run/openalgo-forwarder/events.sock", tmp_path)
        assert path == Path("/run/openalgo-forwarder/control.sock")

    def test_state_directory_otherwise(self, tmp_path):
        """With a tcp endpoint it lives in the state directory."""
        assert control_path("tcp://127.0.0.1:5557", tmp_path) == tmp_path / "control.sock"


class TestRenderStats:
    def test_table(self):
        """Totals, uptime and one aligned row per sink with every counter."""
        text = render_stats(
            snapshot(
                received=1234567,
                sinks={
                    "kafka": sink_snapshot(
                        delivered=1200000,
                        retried=12,
                        waiting=34567,
                        oldest_age_s=95.0,
                        dead_lettered=3,
                        dropped=4,
                        retrying_since_s=75.2,
                        last_error="KafkaTimeoutError: broker unreachable",
                    ),
                    "socketio": sink_snapshot(delivered=1234567),
                },
            )
        )
        lines = text.splitlines()
        assert lines[0] == "forwarder pid 4242, up 1h 02m"
        assert lines[1] == "received 1,234,567 events, 2 decode failures"
        assert lines[2] == ""
        assert lines[3].split() == [
            "sink",
            "delivered",
            "retried",
            "waiting",
            "oldest",
            "dead-lettered",
            "dropped",
            "state",
        ]
        assert lines[4].split() == [
            "kafka",
            "1,200,000",
            "12",
            "34,567",
            "1m",
            "35s",
            "3",
            "4",
            "retrying",
            "for",
            "1m",
            "15s:",
            "KafkaTimeoutError:",
            "broker",
            "unreachable",
        ]
        assert lines[5].split() == ["socketio", "1,234,567", "0", "0", "-", "0", "0", "delivering"]
        assert lines[3].index("state") == lines[4].index("retrying") == lines[5].index("delivering")
        assert text.endswith("\n")

    def test_numbers_right_aligned(self):
        """Counters line up on their last digit so magnitudes compare at a glance."""
        lines = render_stats(snapshot()).splitlines()
        header, kafka, socketio = lines[3], lines[4], lines[5]
        end = header.index("delivered") + len("delivered")
        assert kafka[:end].endswith("1,400")
        assert socketio[:end].endswith("1,500")

    def test_an_error_text_from_an_event_is_escaped(self):
        """A sink's last error can quote what a frame carried: its control characters are
        printed as escapes."""
        failing = sink_snapshot(retrying_since_s=1.0, last_error="refused topic \x1b[2J\x9b")
        text = render_stats(snapshot(sinks={"kafka": failing}))
        assert "\x1b" not in text
        assert "\x9b" not in text
        assert "refused topic \\x1b[2J\\x9b" in text

    def test_a_sink_no_longer_configured_shows_what_it_keeps(self):
        """Events kept for a sink taken out of ORDER_EVENT_MODE are on the table, and why."""
        kept = sink_snapshot(configured=False, waiting=200, oldest_age_s=30.0)
        lines = render_stats(snapshot(sinks={"kafka": kept})).splitlines()
        assert lines[4].split()[:4] == ["kafka", "0", "0", "200"]
        assert lines[4].endswith("not in ORDER_EVENT_MODE: kept until it is again")

    def test_no_sinks(self):
        """A forwarder with no sink says so instead of printing an empty table."""
        assert render_stats(snapshot(sinks={})).splitlines()[-1] == "no sink configured"


class TestFormatDuration:
    @pytest.mark.parametrize(
        ("seconds", "text"),
        [
            (0, "0.0 s"),
            (0.42, "0.4 s"),
            (9.94, "9.9 s"),
            (42.7, "42 s"),
            (185, "3m 05s"),
            (7260, "2h 01m"),
            (273600, "3d 04h"),
        ],
    )
    def test_forms(self, seconds, text):
        """Each magnitude gets the two units that matter."""
        assert format_duration(seconds) == text
