"""Keeps what could not be delivered, one JSON line each, so nothing vanishes without a trace."""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import msgspec
import structlog

from emitter.config import ConfigError
from emitter.contract import utc_timestamp
from emitter.throttle import Throttle
from forwarder.settings import MAX_FRAME_BYTES, Settings
from forwarder.stats import Stats

__all__ = [
    "FILE_NAME",
    "HEAD_BYTES",
    "DeadLetters",
    "Record",
    "count_records",
    "locked",
]

FILE_NAME: Final = "dead-letters.jsonl"
HEAD_BYTES: Final = 4096
"""What is kept of a frame too large to keep whole: its first bytes, beside its length and hash."""
_MAX_TEXT: Final = 1000
"""Longest reason or event id kept: both can come from the frame, so they are bounded too."""
_FIELDS_BYTES: Final = 16 << 10
"""Room for a record's other fields (two bounded texts, each up to 6 bytes a character in JSON):
a frame whose base64 would not fit beside them is summarised before any of it is encoded."""

log = structlog.get_logger("forwarder.deadletter")


class Record(msgspec.Struct, frozen=True):
    """One line of the dead-letter file, as the forwarder writes it and the commands read it;
    the defaults read the lines of older forwarders, which had no id, hash or length."""

    id: str | None = None
    time: str | None = None
    reason: str = ""
    sink: str | None = None
    """None when the frame never decoded, so no sink was involved."""
    event_id: str | None = None
    length: int | None = None
    sha256: str | None = None
    truncated: bool = False
    """Only the first HEAD_BYTES of the frame were kept."""
    raw: str = ""
    """The frame (or its head), base64."""

    def line(self) -> bytes:
        """The record as one JSON line, ASCII only."""
        fields = msgspec.structs.asdict(self)
        return json.dumps(fields, separators=(",", ":")).encode() + b"\n"

    @classmethod
    def read(cls, line: str) -> Record | None:
        """The record on a line; None when the line is not one."""
        try:
            return msgspec.json.decode(line, type=cls)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None


class DeadLetters:
    """Appends to FORWARDER_STATE_DIR/dead-letters.jsonl; a failed write is logged, never raised.

    Every record carries an `id` of its own and the frame's length and sha256, so commands pick
    records by content. A frame over FORWARDER_MAX_FRAME_BYTES, or one whose record would not
    fit the file's cap, keeps only its first HEAD_BYTES (`truncated`): no record is ever larger
    than the cap. When the file reaches the cap it replaces the rotated one, and the records that
    one held are counted (`dead_letters_discarded`) and logged.
    """

    def __init__(
        self,
        state_dir: Path,
        stats: Stats,
        max_bytes: int = Settings.dead_letter_max_bytes,
        max_frame_bytes: int = MAX_FRAME_BYTES,
    ) -> None:
        self.state_dir = state_dir
        self.path = state_dir / FILE_NAME
        self.max_bytes = max_bytes
        self.max_frame_bytes = max_frame_bytes
        self._stats = stats
        self._lock = threading.Lock()
        self._recorded_throttle = Throttle()
        self._failed_throttle = Throttle()

    @classmethod
    def from_settings(cls, settings: Settings, stats: Stats) -> DeadLetters:
        """The dead-letter file the settings describe."""
        return cls(
            settings.state_dir, stats, settings.dead_letter_max_bytes, settings.max_frame_bytes
        )

    def prepare(self) -> str:
        """Create the state directory (0700) and prove it takes a file; say what was found."""
        existed = self.state_dir.is_dir()
        try:
            self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.state_dir):
                pass
        except OSError as exc:
            raise ConfigError(
                "FORWARDER_STATE_DIR", str(self.state_dir), f"a writable directory ({exc.strerror})"
            ) from exc
        return f"{self.state_dir} is writable" + ("" if existed else " (created, mode 0700)")

    def record(
        self, raw: bytes, reason: str, *, sink: str | None = None, event_id: str | None = None
    ) -> None:
        """Keep one frame with why it was refused; `sink` is None when it never decoded."""
        reason, event_id = _bounded(reason), None if event_id is None else _bounded(event_id)
        base64_bytes = -(-len(raw) // 3) * 4
        whole = len(raw) <= self.max_frame_bytes and base64_bytes + _FIELDS_BYTES < self.max_bytes
        line = self._line(raw, reason, sink, event_id, whole=whole)
        if len(line) >= self.max_bytes:  # reason and event id escaped beyond the estimate
            line = self._line(raw, reason, sink, event_id, whole=False)
        with self._lock:
            try:
                self._append(line)
            except OSError as exc:
                self._stats.dead_letter_write_failures += 1
                if (held := self._failed_throttle.ready()) is not None:
                    log.error(
                        "dead_letter_write_failed",
                        path=str(self.path),
                        error=str(exc),
                        reason=reason,
                        sink=sink,
                        event_id=event_id,
                        suppressed=held,
                    )
                return
        if (held := self._recorded_throttle.ready()) is not None:
            log.warning(
                "frame_dead_lettered", reason=reason, sink=sink, event_id=event_id, suppressed=held
            )

    @staticmethod
    def _line(
        raw: bytes, reason: str, sink: str | None, event_id: str | None, *, whole: bool
    ) -> bytes:
        kept = raw if whole else raw[:HEAD_BYTES]
        return Record(
            id=secrets.token_hex(8),
            time=utc_timestamp(time.time_ns()),
            reason=reason,
            sink=sink,
            event_id=event_id,
            length=len(raw),
            sha256=hashlib.sha256(raw).hexdigest(),
            truncated=not whole,
            raw=base64.b64encode(kept).decode("ascii"),
        ).line()

    def _append(self, data: bytes) -> None:
        with locked(self.path):
            try:
                size = self.path.stat().st_size
            except FileNotFoundError:
                size = 0
            if size and size + len(data) > self.max_bytes:
                self._rotate()
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)

    def _rotate(self) -> None:
        """The full file becomes `.1`; the records an older `.1` held are counted as lost."""
        older = rotated(self.path)
        discarded = count_records(older)
        os.replace(self.path, older)
        log.warning(
            "dead_letters_rotated",
            path=str(self.path),
            kept_as=str(older),
            max_bytes=self.max_bytes,
        )
        if discarded:
            self._stats.dead_letters_discarded += discarded
            log.warning(
                "dead_letters_discarded",
                count=discarded,
                total=self._stats.dead_letters_discarded,
                path=str(older),
                max_bytes=self.max_bytes,
            )


def count_records(path: Path) -> int:
    """Lines in a dead-letter file, 0 when it does not exist."""
    try:
        with path.open("rb") as handle:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))
    except FileNotFoundError:
        return 0


def _bounded(text: str) -> str:
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 1] + "…"


def rotated(path: Path) -> Path:
    """The previous generation of the file, kept once the current one reaches its cap."""
    return path.with_name(path.name + ".1")


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Held while the file is appended to or rewritten, by the forwarder and by the commands.

    Made by root (a command run with sudo), the lock file is given to the state directory's
    owner, the forwarder's user, who must open it for every dead letter it writes."""
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        if os.geteuid() == 0:
            owner = path.parent.stat()
            if os.fstat(fd).st_uid != owner.st_uid:
                os.fchown(fd, owner.st_uid, owner.st_gid)
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
