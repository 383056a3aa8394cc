"""The PULL socket: its private directory, stale and live sockets, bursts and several emitters."""

from __future__ import annotations

import grp
import multiprocessing
import os
import socket
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from emitter.config import ConfigError
from emitter.contract import decode_envelope
from forwarder.source import MAX_FRAMES, Source
from tests.support.broker import free_port
from tests.support.forwarder import push_envelopes, push_frames


@contextmanager
def bound(endpoint: str, group: str | None = None) -> Iterator[Source]:
    source = Source(endpoint, socket_group=group)
    source.bind()
    try:
        yield source
    finally:
        source.close()


def receive_all(source: Source, count: int, timeout_s: float = 30) -> list[bytes]:
    frames: list[bytes] = []
    for _ in range(int(timeout_s * 10)):
        frames += source.receive(100)
        if len(frames) >= count:
            break
    return frames


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def endpoint(tmp_path):
    return f"ipc://{tmp_path}/run/events.sock"


class TestIpcDirectory:
    def test_the_directory_is_created_0700_and_the_socket_0600(self, tmp_path, endpoint):
        """Without a socket group only the forwarder's user may connect."""
        with bound(endpoint):
            assert mode(tmp_path / "run") == 0o700
            assert mode(tmp_path / "run" / "events.sock") == 0o600
            assert stat.S_ISSOCK(os.stat(tmp_path / "run" / "events.sock").st_mode)

    def test_a_socket_group_gets_0750_and_0660_with_that_group(self, tmp_path, endpoint):
        """FORWARDER_SOCKET_GROUP lets the app's user connect without opening it to everyone."""
        if os.geteuid() != 0 and len(os.getgroups()) < 2:
            pytest.skip("needs root or a second group to hand the socket to")
        own = os.getgid()
        group = next(
            g
            for g in grp.getgrall()
            if g.gr_gid != own and (os.geteuid() == 0 or g.gr_gid in os.getgroups())
        )
        with bound(endpoint, group.gr_name):
            directory, sock = tmp_path / "run", tmp_path / "run" / "events.sock"
            assert (mode(directory), os.stat(directory).st_gid) == (0o750, group.gr_gid)
            assert (mode(sock), os.stat(sock).st_gid) == (0o660, group.gr_gid)

    def test_an_unknown_group_is_a_config_error(self, endpoint):
        """A typo in the group name stops the forwarder with the variable named."""
        with pytest.raises(ConfigError) as caught:
            Source(endpoint, socket_group="no-such-group-here")
        assert caught.value.variable == "FORWARDER_SOCKET_GROUP"
        assert caught.value.value == "no-such-group-here"

    def test_a_directory_owned_by_someone_else_is_refused(self, tmp_path):
        """Another user could swap the socket for their own and read every event."""
        directory = Path("/")  # root's, unless the test runs as root
        if os.geteuid() == 0:
            directory = tmp_path / "theirs"
            directory.mkdir(mode=0o700)
            os.chown(directory, 65534, 65534)
        with pytest.raises(ConfigError, match="owned by this user") as caught:
            Source(f"ipc://{directory}/events.sock").bind()
        assert caught.value.variable == "FORWARDER_ENDPOINT"

    def test_a_directory_others_can_write_is_refused(self, tmp_path):
        """A world-writable directory (like /tmp) lets anyone replace the socket."""
        directory = tmp_path / "open"
        directory.mkdir()
        directory.chmod(0o1777)
        with pytest.raises(ConfigError, match="others cannot write"):
            Source(f"ipc://{directory}/events.sock").bind()

    def test_a_symlinked_directory_is_refused(self, tmp_path):
        """Ownership is judged on the directory itself, so a link to elsewhere is not trusted."""
        real = tmp_path / "real"
        real.mkdir(mode=0o700)
        (tmp_path / "link").symlink_to(real)
        with pytest.raises(ConfigError, match="real directory"):
            Source(f"ipc://{tmp_path}/link/events.sock").bind()

    def test_a_path_longer_than_a_unix_socket_allows_is_a_config_error(self, tmp_path):
        """Linux cuts socket paths at 107 bytes; say so instead of binding somewhere else."""
        with pytest.raises(ConfigError, match="107 bytes"):
            Source(f"ipc://{tmp_path}/{'d' * 120}/events.sock").bind()

    def test_a_regular_file_at_the_socket_path_is_refused(self, tmp_path, endpoint):
        """Something that is not a socket is not ours to delete."""
        (tmp_path / "run").mkdir(mode=0o700)
        (tmp_path / "run" / "events.sock").write_text("keep me")
        with pytest.raises(ConfigError, match="socket"):
            Source(endpoint).bind()
        assert (tmp_path / "run" / "events.sock").read_text() == "keep me"


class TestSocketFile:
    def test_a_stale_socket_is_replaced(self, tmp_path, endpoint):
        """A forwarder killed with SIGKILL leaves its socket file behind; the next one starts."""
        (tmp_path / "run").mkdir(mode=0o700)
        leftover = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        leftover.bind(str(tmp_path / "run" / "events.sock"))
        leftover.close()
        assert Source(endpoint).describe().endswith("socket stale")
        with bound(endpoint) as source:
            push_frames(endpoint, [b"after restart"])
            assert receive_all(source, 1) == [b"after restart"]

    def test_the_socket_of_a_running_forwarder_is_not_taken(self, endpoint):
        """A second forwarder on the same endpoint would silently steal half the events."""
        with bound(endpoint) as first:
            assert Source(endpoint).describe().endswith("socket listening")
            with pytest.raises(ConfigError, match="no running forwarder"):
                Source(endpoint).bind()
            push_frames(endpoint, [b"still mine"])
            assert receive_all(first, 1) == [b"still mine"]

    def test_close_removes_the_socket_file(self, tmp_path, endpoint):
        """Emitters then see the forwarder gone rather than a dead socket."""
        with bound(endpoint):
            pass
        assert not (tmp_path / "run" / "events.sock").exists()
        assert Source(endpoint).describe().endswith("socket absent")

    def test_describe_does_not_create_anything(self, tmp_path, endpoint):
        """`check` may run beside the service without touching its files."""
        assert "will be created" in Source(endpoint).describe()
        assert not (tmp_path / "run").exists()


class TestReceive:
    def test_nothing_to_read_gives_an_empty_list(self, endpoint):
        """The main loop wakes up to look at its stop flag."""
        with bound(endpoint) as source:
            assert source.receive(10) == []

    def test_a_burst_is_handed_over_in_order_in_capped_chunks(self, endpoint):
        """Decoding is batched, yet one receive never hogs the loop."""
        frames = [f"frame-{n}".encode() for n in range(2 * MAX_FRAMES + 500)]
        with bound(endpoint) as source:
            push_frames(endpoint, frames)
            chunks = []
            while sum(map(len, chunks)) < len(frames):
                chunk = source.receive(5000)
                assert chunk, "frames stopped arriving"
                chunks.append(chunk)
        assert all(len(chunk) <= MAX_FRAMES for chunk in chunks)
        assert [frame for chunk in chunks for frame in chunk] == frames

    def test_a_loopback_tcp_endpoint_works_too(self):
        """Where ipc is not possible, a loopback port carries the same frames."""
        endpoint = f"tcp://127.0.0.1:{free_port()}"
        with bound(endpoint) as source:
            push_frames(endpoint, [b"over tcp"])
            assert receive_all(source, 1) == [b"over tcp"]
            assert Source(endpoint).describe() == f"{endpoint} (tcp)"

    def test_a_tcp_port_already_taken_is_a_config_error(self):
        """Another program on the port is reported with the endpoint, not as a traceback."""
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            endpoint = f"tcp://127.0.0.1:{taken.getsockname()[1]}"
            with pytest.raises(ConfigError, match="Address already in use") as caught:
                Source(endpoint).bind()
        assert caught.value.variable == "FORWARDER_ENDPOINT"

    def test_receive_before_bind_is_a_programming_error(self, endpoint):
        """Said plainly rather than as an AttributeError on None."""
        with pytest.raises(RuntimeError, match="before bind"):
            Source(endpoint).receive(0)

    def test_three_emitting_processes_at_once_each_arrive_whole_and_in_order(self, endpoint):
        """Gunicorn workers each push on their own connection to the one endpoint."""
        spawn = multiprocessing.get_context("spawn")
        with bound(endpoint) as source:
            emitters = [
                spawn.Process(target=push_envelopes, args=(endpoint, f"p{n}", 300))
                for n in range(3)
            ]
            for emitter in emitters:
                emitter.start()
            try:
                frames = receive_all(source, 900)
            finally:
                for emitter in emitters:
                    emitter.join(30)
            assert [emitter.exitcode for emitter in emitters] == [0, 0, 0]
        ids = [decode_envelope(frame).id for frame in frames]
        assert len(ids) == 900
        for n in range(3):
            assert [i for i in ids if i.startswith(f"p{n}-")] == [
                f"p{n}-{k:06d}" for k in range(300)
            ]
