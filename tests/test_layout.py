"""The README's Layout section, held: which package may import which, read from the source."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = ("emitter", "forwarder", "harness", "tests", "demo", "bench")


def modules(package: str) -> Iterator[tuple[str, Path]]:
    """(dotted name, path) of every module of a package given by its dotted name."""
    paths = sorted(ROOT.joinpath(*package.split(".")).rglob("*.py"))
    assert paths, f"no module in {package}"
    for path in paths:
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        yield name.removesuffix(".__init__"), path


def imports(path: Path) -> set[str]:
    """Every module the file names in an import statement, at any depth."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


def within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def breaking(package: str, allowed: tuple[str, ...]) -> list[tuple[str, str]]:
    """(module, import) pairs of `package` naming one of ours outside `allowed`."""
    return [
        (name, imported)
        for name, path in modules(package)
        for imported in sorted(imports(path))
        if within(imported, OURS) and not within(imported, (package, *allowed))
    ]


RULES = {
    "emitter": (),
    "forwarder.sinks": ("emitter", "forwarder.errors", "forwarder.record", "forwarder.settings"),
    "forwarder.store": ("emitter", "forwarder.settings"),
    "forwarder.ops": ("emitter", "forwarder.errors", "forwarder.stats", "forwarder.unix_socket"),
    "forwarder": ("emitter",),
    "harness": ("emitter", "forwarder"),
}


class TestLayout:
    @pytest.mark.parametrize(("package", "allowed"), RULES.items())
    def test_each_package_imports_only_what_the_readme_allows(self, package, allowed):
        """A new import across a boundary fails here before it tangles the packages."""
        assert breaking(package, allowed) == []

    def test_a_crossing_import_is_found(self):
        """The check sees through subpackages: sinks do import the forwarder's errors."""
        assert ("forwarder.sinks.base", "forwarder.errors") in breaking("forwarder.sinks", ())

    def test_only_the_cli_imports_the_commands(self):
        """Subcommands are leaves: the service never depends on how it is invoked."""
        importers = {
            name
            for name, path in modules("forwarder")
            if not within(name, ("forwarder.commands",))
            and any(within(imported, ("forwarder.commands",)) for imported in imports(path))
        }
        assert importers == {"forwarder.cli"}

    def test_settings_import_no_server_store_or_client(self):
        """Reading the settings stays cheap and free of side effects."""
        heavy = (
            "forwarder.ops",
            "forwarder.commands",
            "forwarder.store",
            "forwarder.service",
            "prometheus_client",
            "http.server",
            "kafka",
            "confluent_kafka",
            "socketio",
        )
        assert [m for m in imports(ROOT / "forwarder" / "settings.py") if within(m, heavy)] == []
