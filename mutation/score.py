"""The mutation score per module, so a weak spot in the tests shows where it is.

Reads `mutmut results --all true` and mutation/equivalent.txt, the reviewed list of mutants that
change no behaviour (one line each: the mutant's name, then why). The score of a module is the
share of its non-equivalent mutants that the tests detect (killed, or made to time out).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ModuleScore", "main", "read_equivalent", "read_results", "scores"]

EQUIVALENT = Path(__file__).with_name("equivalent.txt")
DETECTED = frozenset({"killed", "timeout", "suspicious"})
_NAME = re.compile(r"^(?P<module>[\w.]+?)\.x(?:ǁ|_)")


@dataclass
class ModuleScore:
    """Counts of one module's mutants by outcome."""

    module: str
    outcomes: Counter[str] = field(default_factory=Counter)
    equivalent: int = 0

    @property
    def detected(self) -> int:
        return sum(self.outcomes[status] for status in DETECTED)

    @property
    def counted(self) -> int:
        """Mutants that change behaviour: every one of them should be detected."""
        return sum(self.outcomes.values()) - self.equivalent

    @property
    def missed(self) -> int:
        return self.counted - self.detected

    @property
    def percent(self) -> float:
        return 100 * self.detected / self.counted if self.counted else 100.0


def module_of(mutant: str) -> str:
    """`forwarder.store.disk.xǁDiskStoreǁtake__mutmut_3` -> `forwarder.store.disk`."""
    match = _NAME.match(mutant)
    if match is None:
        raise ValueError(f"mutant name {mutant!r} is not module.x_function__mutmut_N")
    return match["module"]


def read_results(lines: Iterable[str]) -> dict[str, str]:
    """`name: status` lines, as `mutmut results --all true` prints them."""
    results = {}
    for line in lines:
        name, sep, status = line.strip().partition(": ")
        if sep and "__mutmut_" in name:
            results[name] = status.strip()
    return results


def read_equivalent(path: Path) -> dict[str, str]:
    """Mutant name -> the reason it changes no behaviour; blank lines and # comments skipped."""
    equivalent = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, _, reason = line.partition(" ")
        if not reason.strip():
            raise ValueError(f"{path}:{number}: {name} is listed without a reason")
        equivalent[name] = reason.strip()
    return equivalent


def scores(results: dict[str, str], equivalent: dict[str, str]) -> list[ModuleScore]:
    """One score per module, sorted by name; an equivalent mutant the tests kill is no longer
    listed as equivalent (it changed behaviour after all) and counts as detected."""
    by_module: dict[str, ModuleScore] = {}
    for name, status in results.items():
        module = module_of(name)
        score = by_module.setdefault(module, ModuleScore(module))
        score.outcomes[status] += 1
        if name in equivalent and status not in DETECTED:
            score.equivalent += 1
    return [by_module[module] for module in sorted(by_module)]


def _total(name: str, parts: Sequence[ModuleScore]) -> ModuleScore:
    total = ModuleScore(name, equivalent=sum(part.equivalent for part in parts))
    for part in parts:
        total.outcomes.update(part.outcomes)
    return total


def render(table: Sequence[ModuleScore]) -> str:
    """The table printed by `make mutation`."""
    header = f"{'module':<28} {'mutants':>7} {'equiv':>5} {'killed':>6} {'missed':>6} {'score':>7}"
    lines = [header, "-" * len(header)]
    for row in table:
        lines.append(
            f"{row.module:<28} {sum(row.outcomes.values()):>7} {row.equivalent:>5} "
            f"{row.detected:>6} {row.missed:>6} {row.percent:>6.1f}%"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the table; exit 1 when a module scores under --min-score."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--min-score", type=float, default=80.0, help="percent, per module")
    parser.add_argument("--survivors", action="store_true", help="list the missed mutants")
    args = parser.parse_args(argv)
    listing = subprocess.run(  # noqa: S603 - this venv's mutmut, fixed arguments
        [str(Path(sys.executable).with_name("mutmut")), "results", "--all", "true"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    results = read_results(listing.splitlines())
    equivalent = read_equivalent(EQUIVALENT)
    stale = sorted(set(equivalent) - set(results))
    modules = scores(results, equivalent)
    store = [row for row in modules if row.module.startswith("forwarder.store.")]
    table = [row for row in modules if row not in store] + store
    if store:
        table.append(_total("forwarder.store (all)", store))
    print(render(table))
    killed_equivalent = sorted(n for n in equivalent if results.get(n) in DETECTED)
    for name in killed_equivalent:
        print(f"listed as equivalent but killed by the tests: {name}")
    for name in stale:
        print(f"listed as equivalent but no longer a mutant: {name}")
    if args.survivors:
        for name, status in sorted(results.items()):
            if status not in DETECTED and name not in equivalent:
                print(f"{status}: {name}")
    low = [row.module for row in table if row.percent < args.min_score]
    if low:
        print(f"under {args.min_score:.0f}%: {', '.join(low)}")
    return 1 if low or stale or killed_equivalent else 0


if __name__ == "__main__":
    sys.exit(main())
