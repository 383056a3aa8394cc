"""`openalgo-forwarder check`: validate the settings and reach each sink once."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final

from emitter.config import ConfigError, curve_client_keys
from emitter.settings import EmitterSettings
from forwarder import log_setup
from forwarder.deadletter import DeadLetters
from forwarder.envfile import EnvFile
from forwarder.settings import Settings
from forwarder.sinks.table import build_sinks, noisy_libraries
from forwarder.source import Source
from forwarder.stats import Stats
from forwarder.store import BUFFER_FILE
from forwarder.store.inspect import describe

__all__ = ["HELP", "run"]

HELP: Final = "validate the settings and reach each sink once; exit 0 when all is well"


def run(
    settings: Settings, env: Mapping[str, str], path: Path | None, env_file: EnvFile | None
) -> int:
    """Exit status 0 when every line printed is ok (or a warning), 1 otherwise."""
    emitter = EmitterSettings.from_env(env)  # the env file is the app's too
    log_setup.configure(
        settings.log_level_number,
        settings.log_format,
        stream=sys.stderr,
        secrets=settings.secrets,
        wire=settings.log_wire,
        quiet=noisy_libraries(settings),
    )
    report = _Report()
    report.line("configuration", True, _describe(settings))
    report.line("emitter", True, emitter.describe())
    if emitter.max_event_bytes > settings.max_frame_bytes:
        report.line(
            "frame limits",
            False,
            f"EMITTER_MAX_EVENT_BYTES ({emitter.max_event_bytes:,}) is above "
            f"FORWARDER_MAX_FRAME_BYTES ({settings.max_frame_bytes:,}): an event between the two "
            "is queued by the app and refused by the forwarder",
        )
    if path is not None and env_file is not None:
        for line, note in env_file.notes:
            report.warn(f"{path} line {line}", note)
    report.attempt("endpoint", Source.from_settings(settings).describe)
    if env.get("EMITTER_CURVE_SECRET_KEY_FILE") or env.get("EMITTER_CURVE_SERVER_KEY"):
        report.attempt("emitter keys", functools.partial(_emitter_keys, settings, env))
    report.attempt("state directory", DeadLetters.from_settings(settings, Stats()).prepare)
    report.attempt("buffer", functools.partial(_describe_buffer, settings))
    for sink in build_sinks(settings):
        with sink:
            report.attempt(f"sink {sink.name}", sink.check)
    return 0 if report.all_ok else 1


def _emitter_keys(settings: Settings, env: Mapping[str, str]) -> str:
    """The emitter's CURVE settings in the same file must load and name this forwarder's key."""
    keys = curve_client_keys(env)
    assert keys is not None
    if settings.curve is not None and keys.server != settings.curve.public:
        raise ConfigError(
            "EMITTER_CURVE_SERVER_KEY",
            keys.server.decode(),
            f"this forwarder's public key {settings.curve.public.decode()}",
        )
    return f"EMITTER_CURVE_SERVER_KEY {keys.server.decode()}, emitter key {keys.public.decode()}"


def _describe_buffer(settings: Settings) -> str:
    if settings.buffer == "memory":
        return f"in memory, {settings.queue_max:,} events per sink, lost if the forwarder stops"
    configured = [mode.lower() for mode in settings.modes]
    detail = describe(settings.state_dir / BUFFER_FILE, settings.buffer_max_bytes, configured)
    return f"{detail}; when full {settings.when_full}, fsync {settings.fsync}"


class _Report:
    """Prints one aligned line per check as it completes, so a slow check shows where it is."""

    def __init__(self) -> None:
        self.all_ok = True

    def line(self, what: str, ok: bool, detail: str) -> None:
        self.all_ok = self.all_ok and ok
        print(f"{'ok' if ok else 'FAILED':<7}{what}: {detail}", flush=True)

    def warn(self, what: str, detail: str) -> None:
        """Worth a look, not a failure: the exit status stays 0."""
        print(f"{'warn':<7}{what}: {detail}", flush=True)

    def attempt(self, what: str, probe: Callable[[], str]) -> None:
        try:
            detail = probe()
        except Exception as exc:
            self.line(what, False, str(exc) or type(exc).__name__)
        else:
            self.line(what, True, detail)


def _describe(settings: Settings) -> str:
    """The settings that decide where events go; secrets appear only as 'set' or 'not set'."""
    parts = [
        f"modes {','.join(settings.modes)}",
        f"log {settings.log_level}"
        + (" with wire logging (LOG_WIRE=1)" if settings.log_wire else ""),
        f"frames up to {settings.max_frame_bytes:,} bytes",
        f"batch {settings.batch_max} events or {settings.batch_linger_ms} ms",
        f"retry {settings.retry_base_ms}-{settings.retry_max_ms} ms",
    ]
    parts += [sink.describe() for sink in settings.sinks.values()]
    return "; ".join(parts)
