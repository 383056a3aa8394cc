"""The `openalgo-forwarder` command: read the settings, then run the service or check the setup."""

from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from dotenv import dotenv_values

from emitter.config import ConfigError
from forwarder import logs
from forwarder.backlog_commands import add_backlog_arguments, run_backlog
from forwarder.control import ControlError, control_path, query, render_stats
from forwarder.deadletter import DeadLetters
from forwarder.deadletter_commands import add_dead_letter_arguments, run_dead_letters
from forwarder.logview import add_logs_arguments, run_logs
from forwarder.notify import Notifier
from forwarder.service import Forwarder
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
    """Entry point; exit status 2 with one line on stderr when a setting cannot be used."""
    args = _parser().parse_args(argv)
    if args.command == "logs":
        return run_logs(args)
    if args.command == "stats" and args.socket is not None:
        return _print_stats(args.socket, as_json=args.json)
    try:
        settings = Settings.from_env(_environment(args.env_file))
        if args.command == "stats":
            path = control_path(settings.endpoint, settings.state_dir)
            return _print_stats(path, as_json=args.json)
        if args.command in _ACTIONS:
            return _ACTIONS[args.command](args, settings)
        command: Callable[[Settings], int] = args.command
        return command(settings)
    except ConfigError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_CONFIG


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Deliver OpenAlgo events from the local socket to Kafka and Socket.IO.",
    )
    env_file_help = (
        "read settings from this KEY=VALUE file (as .sample.env); a variable already set in the "
        "environment wins over the file"
    )
    parser.add_argument("--env-file", type=Path, metavar="PATH", help=env_file_help)
    # Accepted after the command too (`check --env-file F`), without overriding one given before.
    after_command = argparse.ArgumentParser(add_help=False)
    after_command.add_argument(
        "--env-file", type=Path, metavar="PATH", help=env_file_help, default=argparse.SUPPRESS
    )
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")
    add_command = functools.partial(commands.add_parser, parents=[after_command])
    add_command("run", help="forward events until SIGTERM or SIGINT").set_defaults(command=_run)
    add_command(
        "check", help="validate the settings and reach each sink once; exit 0 when all is well"
    ).set_defaults(command=_check)
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


def _print_stats(path: Path, *, as_json: bool) -> int:
    try:
        snapshot = query(path)
    except ControlError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(json.dumps(snapshot, indent=2) if as_json else render_stats(snapshot))
    return EXIT_OK


def _environment(env_file: Path | None) -> dict[str, str]:
    """The process environment, filled in (never overridden) from the env file."""
    if env_file is None:
        return dict(os.environ)
    if not os.access(env_file, os.R_OK) or not env_file.is_file():
        raise ConfigError("--env-file", str(env_file), "the path of a readable file")
    from_file = dotenv_values(env_file, interpolate=False)
    return {key: value for key, value in from_file.items() if value is not None} | dict(os.environ)


def _run(settings: Settings) -> int:
    logs.configure(settings.log_level_number, settings.log_format)
    source = Source(settings.endpoint, socket_group=settings.socket_group)
    forwarder = Forwarder(
        settings, build_sinks(settings), source=source, notifier=Notifier.from_env()
    )

    def request_stop(signum: int, frame: FrameType | None) -> None:
        forwarder.stop()
        for name in (signal.SIGTERM, signal.SIGINT):
            signal.signal(name, signal.SIG_DFL)  # a second signal ends the process at once

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    forwarder.run()
    return EXIT_OK


def _check(settings: Settings) -> int:
    logs.configure(settings.log_level_number, settings.log_format, stream=sys.stderr)
    report = _Report()
    report.line("configuration", True, _describe(settings))
    report.attempt(
        "endpoint", Source(settings.endpoint, socket_group=settings.socket_group).describe
    )
    report.attempt(
        "state directory",
        DeadLetters(settings.state_dir, Stats(), settings.dead_letter_max_bytes).prepare,
    )
    report.attempt("buffer", functools.partial(_describe_buffer, settings))
    for sink in build_sinks(settings):
        with sink:
            report.attempt(f"sink {sink.name}", sink.check)
    return EXIT_OK if report.all_ok else EXIT_FAILED


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
        f"batch {settings.batch_max} events or {settings.batch_linger_ms} ms",
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
