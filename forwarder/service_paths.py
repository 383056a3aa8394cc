"""Where the shipped systemd units keep a forwarder's files, so commands run by hand find it.

`openalgo-forwarder.service` reads /etc/openalgo/forwarder.env and gets /run/openalgo-forwarder
and /var/lib/openalgo-forwarder; instance NAME of `openalgo-forwarder@.service` (one per OpenAlgo
instance on the host) reads /etc/openalgo/forwarder-NAME.env and gets /run/openalgo-forwarder-NAME
and /var/lib/openalgo-forwarder-NAME. systemd tells the daemon those directories in
RUNTIME_DIRECTORY and STATE_DIRECTORY, which the settings' defaults follow; `--service` and
`--instance NAME` give a command the same environment. The unit tests hold these paths and the
units' EnvironmentFile=, RuntimeDirectory= and StateDirectory= to each other.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from emitter.config import ConfigError

__all__ = ["UNIT_NAME", "ServicePaths"]

UNIT_NAME: Final = "openalgo-forwarder"
_INSTANCE: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")


@dataclass(frozen=True)
class ServicePaths:
    """The env file and directories of one systemd-run forwarder."""

    unit: str
    env_file: Path
    runtime_directory: Path
    state_directory: Path

    @classmethod
    def of(cls, instance: str | None = None, root: Path = Path("/")) -> ServicePaths:
        """The single service, or instance `instance` of the template; under `root` for an
        image or a container's file system, as `systemctl --root` reads one."""
        if instance is not None and not _INSTANCE.fullmatch(instance):
            raise ConfigError(
                "--instance", instance, "an instance name of letters, digits, '_', '.' or '-'"
            )
        suffix = "" if instance is None else f"-{instance}"
        unit = f"{UNIT_NAME}.service" if instance is None else f"{UNIT_NAME}@{instance}.service"
        return cls(
            unit=unit,
            env_file=root / "etc" / "openalgo" / f"forwarder{suffix}.env",
            runtime_directory=root / "run" / f"{UNIT_NAME}{suffix}",
            state_directory=root / "var" / "lib" / f"{UNIT_NAME}{suffix}",
        )

    def environment(self) -> dict[str, str]:
        """What systemd sets for the unit's RuntimeDirectory= and StateDirectory=."""
        return {
            "RUNTIME_DIRECTORY": str(self.runtime_directory),
            "STATE_DIRECTORY": str(self.state_directory),
        }
