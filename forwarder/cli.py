"""The `openalgo-forwarder` command: read the settings, then run the service or check the setup."""

from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import TextIO, cast

from emitter.config import ConfigError, curve_client_keys
from emitter.settings import EmitterSettings
from forwarder import logs
from forwarder.backlog_commands import add_backlog_arguments, run_backlog
from forwarder.control import ControlError, control_path, query, render_stats
from forwarder.curve import keygen
from forwarder.deadletter import DeadLetters
from forwarder.deadletter_commands import add_dead_letter_arguments, run_dead_letters
from forwarder.envfile import EnvFile, EnvFileError, read_env_file
from forwarder.errors import StartupError
from forwarder.logview import add_logs_arguments, run_logs
from forwarder.notify import Notifier
from forwarder.service import Forwarder
from forwarder.service_paths import UNIT_NAME, ServicePaths
from forwarder.settings import Settings
from forwarder.sinks import build_sinks
from forwarder.source import Source
from forwarder.stats import Stats
from forwarder.store import BUFFER_FILE
from forwarder.store.inspect import describe

__all__ = ["main"]

PROG = "openalgo-forwarder"
EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


_ACTIONS: dict[str, Callable[[argparse.Namespace, Settings], int]] = {
    "dead-letters": run_dead_letters,
    "backlog": run_backlog,
}
"""Commands with actions of their own, given the parsed arguments and the settings."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; exit status 2 with one line on stderr when a setting cannot be used or the
    daemon cannot take what it needs at start."""
    args = _parser().parse_args(argv)
    if args.command == "logs":
        return run_logs(args)
    try:
        return _dispatch(args)
    except (ConfigError, StartupError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_CONFIG


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "keygen":
        for line in keygen(args.directory, args.client or ["emitter"]):
            print(line)
        return EXIT_OK
    if args.command == "stats" and args.socket is not None:
        return _print_stats(args.socket, as_json=args.json)
    service = _service(args)
    path = args.env_file or (None if service is None else service.env_file)
    env_file = _read_env_file(path)
    env = _environment(env_file, service)
    settings = Settings.from_env(env)
    if args.command == "stats":
        return _print_stats(control_path(settings.endpoint, settings.state_dir), as_json=args.json)
    if args.command in _ACTIONS:
        return _ACTIONS[args.command](args, settings)
    if args.command == "check":
        return _check(settings, env, path, env_file)
    return _run(settings)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Deliver OpenAlgo events from the local socket to Kafka and Socket.IO.",
    )
    _add_where_options(parser, after_command=False)
    # Accepted after the command too (`check --env-file F`), without overriding one given before.
    after_command = argparse.ArgumentParser(add_help=False)
    _add_where_options(after_command, after_command=True)
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")
    add_command = functools.partial(commands.add_parser, parents=[after_command])
    add_command("run", help="forward events until SIGTERM or SIGINT").set_defaults(command="run")
    add_command(
        "check", help="validate the settings and reach each sink once; exit 0 when all is well"
    ).set_defaults(command="check")
    stats = add_command("stats", help="ask the running forwarder for its counters, per sink")
    stats.add_argument("--json", action="store_true", help="print the counters as JSON")
    stats.add_argument(
        "--socket",
        type=Path,
        metavar="PATH",
        help="the control socket (default: control.sock beside the ipc endpoint, else in the "
        "state directory)",
    )
    stats.set_defaults(command="stats")
    keys = add_command(
        "keygen",
        help="write CURVE keys for a tcp:// endpoint: the forwarder's, each emitter's, and the "
        "clients file listing the emitters' public keys; existing files are kept",
    )
    keys.add_argument("directory", type=Path, help="where to write them (made 0700)")
    keys.add_argument(
        "--client",
        action="append",
        metavar="NAME",
        help="an emitter to make keys for (repeatable; default: one named emitter)",
    )
    keys.set_defaults(command="keygen")
    logs_parser = add_command("logs", help="pretty-print and filter the forwarder's JSON log lines")
    add_logs_arguments(logs_parser)
    logs_parser.set_defaults(command="logs")
    letters = add_command(
        "dead-letters", help="list, show, replay or purge what could not be delivered"
    )
    add_dead_letter_arguments(letters)
    letters.set_defaults(command="dead-letters")
    backlog = add_command(
        "backlog", help="drop what the disk buffer keeps for a sink taken out of ORDER_EVENT_MODE"
    )
    add_backlog_arguments(backlog)
    backlog.set_defaults(command="backlog")
    return parser


def _add_where_options(parser: argparse.ArgumentParser, *, after_command: bool) -> None:
    """Where the settings come from: an env file, or a systemd service's files."""

    def default(value: object) -> object:
        return argparse.SUPPRESS if after_command else value

    parser.add_argument(
        "--env-file",
        type=Path,
        metavar="PATH",
        default=default(None),
        help="read settings from this KEY=VALUE file (as .sample.env), parsed as systemd's "
        "EnvironmentFile= parses it; a variable already set in the environment wins over the file",
    )
    parser.add_argument(
        "--service",
        action="store_true",
        default=default(False),
        help=f"act on the systemd service {UNIT_NAME}.service: its env file and directories",
    )
    parser.add_argument(
        "--instance",
        metavar="NAME",
        default=default(None),
        help=f"act on the systemd service {UNIT_NAME}@NAME.service (one per OpenAlgo instance)",
    )
    parser.add_argument(
        "--root",
        type=Path,
        metavar="DIR",
        default=default(Path("/")),
        help="with --service or --instance: the service's files are below DIR, as with "
        "systemctl --root (an image, a container's file system)",
    )


def _service(args: argparse.Namespace) -> ServicePaths | None:
    if args.instance is None and not args.service:
        return None
    return ServicePaths.of(args.instance, args.root)


def _print_stats(path: Path, *, as_json: bool) -> int:
    try:
        snapshot = query(path)
    except ControlError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(json.dumps(snapshot, indent=2) if as_json else render_stats(snapshot))
    return EXIT_OK


def _read_env_file(path: Path | None) -> EnvFile | None:
    if path is None:
        return None
    if not path.is_file():
        raise ConfigError("--env-file", str(path), "the path of a readable file")
    try:
        return read_env_file(path)
    except EnvFileError as exc:
        raise ConfigError("--env-file", str(path), f"a file systemd can read ({exc})") from None


def _environment(env_file: EnvFile | None, service: ServicePaths | None) -> dict[str, str]:
    """The process environment, filled in (never overridden) from the env file and, for a
    systemd service, with the directories systemd gives it."""
    from_service = {} if service is None else service.environment()
    from_file = {} if env_file is None else env_file.values
    return from_service | from_file | dict(os.environ)


def _run(settings: Settings) -> int:
    logs.configure(
        settings.log_level_number,
        settings.log_format,
        secrets=settings.secrets,
        wire=settings.log_wire,
    )
    # A traceback Python prints itself (an uncaught error in a thread) is redacted too.
    sys.stderr = cast(TextIO, logs.RedactingStream(sys.stderr, logs.Redactor(settings.secrets)))
    forwarder = Forwarder(settings, build_sinks(settings), notifier=Notifier.from_env())

    def request_stop(signum: int, frame: FrameType | None) -> None:
        forwarder.stop()
        for name in (signal.SIGTERM, signal.SIGINT):
            signal.signal(name, signal.SIG_DFL)  # a second signal ends the process at once

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    forwarder.run()
    return EXIT_OK


def _check(
    settings: Settings, env: Mapping[str, str], path: Path | None, env_file: EnvFile | None
) -> int:
    emitter = EmitterSettings.from_env(env)  # the env file is the app's too
    logs.configure(
        settings.log_level_number,
        settings.log_format,
        stream=sys.stderr,
        secrets=settings.secrets,
        wire=settings.log_wire,
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
    return EXIT_OK if report.all_ok else EXIT_FAILED


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
        f"batch {settings.batch_max} events or {settings.batch_linger_ms} ms, "
        f"{settings.inflight_batches} in flight",
        f"retry {settings.retry_base_ms}-{settings.retry_max_ms} ms",
    ]
    if settings.kafka is not None:
        kafka = settings.kafka
        text = (
            f"kafka ({kafka.client}) {','.join(kafka.bootstrap_servers)} topic {kafka.topic} "
            f"compression {kafka.compression} acks {kafka.acks} {kafka.security_protocol}"
        )
        if kafka.sasl_mechanism is not None:
            text += (
                f" {kafka.sasl_mechanism} user {kafka.sasl_username} "
                f"password {_set(kafka.sasl_password)}"
            )
        parts.append(text)
    if settings.socketio is not None:
        socketio = settings.socketio
        parts.append(
            f"socketio {socketio.url} namespace {socketio.namespace} "
            f"relay secret {_set(socketio.relay_secret)} "
            f"calls up to {socketio.max_call_bytes:,} bytes"
        )
    return "; ".join(parts)


def _set(secret: str | None) -> str:
    return "set" if secret else "not set"
