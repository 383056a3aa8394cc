"""The forwarder's own errors; library exceptions are translated into these at the sink boundary.

ForwarderError
├── ConfigError          (re-exported from emitter.config: variable, value, accepted)
└── SinkError
    ├── RetriableSinkError   the same events may succeed later: back off and send again
    └── PermanentSinkError   these events will never be accepted: dead-letter them
"""

from __future__ import annotations

from emitter.config import ConfigError

__all__ = ["ConfigError", "ForwarderError", "PermanentSinkError", "RetriableSinkError", "SinkError"]


class ForwarderError(Exception):
    """Base of every error the forwarder raises on purpose."""


class SinkError(ForwarderError):
    """A sink could not deliver; subclasses say whether trying again can help."""


class RetriableSinkError(SinkError):
    """Broker unreachable, timeouts, leader changes, a disconnected server: try again later."""


class PermanentSinkError(SinkError):
    """Record too large, not authorised, invalid topic: retrying cannot help."""
