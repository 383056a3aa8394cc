"""The forwarder's own errors; library exceptions are translated into these at the sink boundary.

Exception
├── ValueError
│   ├── ConfigError        emitter.config (re-exported here): a setting's variable, value, accepted
│   ├── EnvFileError       forwarder.envfile: an env file systemd could not read either
│   └── InvalidEnvelope    emitter.contract: a frame that is not an event; dead-lettered, not raised
└── ForwarderError
    ├── StartupError             something the daemon needs at start is taken or refused (exit 2)
    ├── ControlError             forwarder.ops.control: the stats could not be served or fetched
    ├── DeadLetterCommandError   forwarder.commands.dead_letters: an action that could not be done
    └── SinkError
        ├── RetriableSinkError   the same events may succeed later: back off and send again
        └── PermanentSinkError   these events will never be accepted: dead-letter them

`main` turns ConfigError and StartupError into exit status 2 and one line on stderr.
"""

from __future__ import annotations

from emitter.config import ConfigError

__all__ = [
    "ConfigError",
    "ForwarderError",
    "PermanentSinkError",
    "RetriableSinkError",
    "SinkError",
    "StartupError",
]


class ForwarderError(Exception):
    """Base of every error the forwarder raises on purpose."""


class StartupError(ForwarderError):
    """A port, a socket, a lock or a directory the daemon needs at start could not be taken."""


class SinkError(ForwarderError):
    """A sink could not deliver; subclasses say whether trying again can help."""


class RetriableSinkError(SinkError):
    """Broker unreachable, timeouts, leader changes, a disconnected server: try again later."""


class PermanentSinkError(SinkError):
    """Record too large, not authorised, invalid topic: retrying cannot help."""
