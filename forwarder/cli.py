"""The `openalgo-forwarder` command: parse the arguments, read the settings, call the subcommand."""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from emitter.config import ConfigError
from forwarder.commands import backlog, check, dead_letters, keygen, logs, run, stats
from forwarder.envfile import EnvFile, EnvFileError, read_env_file
from forwarder.errors import StartupError
from forwarder.ops.control import control_path
from forwarder.service_paths import UNIT_NAME, ServicePaths
from forwarder.settings import Settings

__all__ = ["main"]

PROG = "openalgo-forwarder"
EXIT_CONFIG = 2


_ACTIONS: dict[str, Callable[[argparse.Namespace, Settings], int]] = {
    "dead-letters": dead_letters.run,
    "backlog": backlog.run,
}
"""Commands with actions of their own, given the parsed arguments and the settings."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; exit status 2 with one line on stderr when a setting cannot be used or the
    daemon cannot take what it needs at start."""
    args = _parser().parse_args(argv)
    if args.command == "logs":
        return logs.run(args)
    try:
        return _dispatch(args)
    except (ConfigError, StartupError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_CONFIG


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "keygen":
        return keygen.run(args)
    if args.command == "stats" and args.socket is not None:
        return stats.run(args.socket, as_json=args.json)
    service = _service(args)
    path = args.env_file or (None if service is None else service.env_file)
    env_file = _read_env_file(path)
    env = _environment(env_file, service)
    settings = Settings.from_env(env)
    if args.command == "stats":
        return stats.run(control_path(settings.endpoint, settings.state_dir), as_json=args.json)
    if args.command in _ACTIONS:
        return _ACTIONS[args.command](args, settings)
    if args.command == "check":
        return check.run(settings, env, path, env_file)
    return run.run(settings)


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
    add_command("run", help=run.HELP).set_defaults(command="run")
    add_command("check", help=check.HELP).set_defaults(command="check")
    for name, command in (
        ("stats", stats),
        ("keygen", keygen),
        ("logs", logs),
        ("dead-letters", dead_letters),
        ("backlog", backlog),
    ):
        subparser = add_command(name, help=command.HELP)
        command.add_arguments(subparser)
        subparser.set_defaults(command=name)
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
