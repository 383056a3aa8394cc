"""The hierarchy errors.py draws is the one the classes have."""

from __future__ import annotations

import re

import forwarder.errors
from emitter.contract import InvalidEnvelope
from forwarder.commands.dead_letters import DeadLetterCommandError
from forwarder.envfile import EnvFileError
from forwarder.ops.control import ControlError

CLASSES: dict[str, type[BaseException]] = {
    "Exception": Exception,
    "ValueError": ValueError,
    "EnvFileError": EnvFileError,
    "InvalidEnvelope": InvalidEnvelope,
    "ControlError": ControlError,
    "DeadLetterCommandError": DeadLetterCommandError,
    **{
        name: value
        for name, value in vars(forwarder.errors).items()
        if isinstance(value, type) and issubclass(value, BaseException)
    },
}


def drawn() -> list[tuple[str, str]]:
    """(child, parent) for every line of the docstring's tree."""
    doc = forwarder.errors.__doc__ or ""
    pairs = []
    parents: dict[int, str] = {}
    for line in doc.splitlines():
        match = re.match(r"^([│ ├└─]*)(\w+)", line)
        if match is None or (not match.group(1) and match.group(2) != "Exception"):
            continue
        depth = len(match.group(1)) // 4
        parents[depth] = match.group(2)
        if depth:
            pairs.append((match.group(2), parents[depth - 1]))
    return pairs


class TestHierarchy:
    def test_every_class_drawn_has_the_parent_drawn(self):
        """Each class in the diagram derives directly from the class drawn above it."""
        pairs = drawn()
        assert len(pairs) == 11
        assert [(child, CLASSES[child].__bases__) for child, _ in pairs] == [
            (child, (CLASSES[parent],)) for child, parent in pairs
        ]

    def test_every_public_error_of_the_module_is_drawn(self):
        """A new error class cannot be left out of the diagram."""
        drawn_names = {child for child, _ in drawn()}
        assert set(forwarder.errors.__all__) <= drawn_names
