"""Run one crash reproducer again: `python -m tests.fuzz.replay tests/fuzz/crashes/<file>.json`."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

from .harness import Target, from_jsonable

MODULES = sorted(p.stem for p in Path(__file__).parent.glob("targets_*.py"))


def all_targets() -> dict[str, Target]:
    """The targets of every `targets_<entry>.py`: a new connector adds its file, nothing else."""
    found: dict[str, Target] = {}
    for module in MODULES:
        for target in importlib.import_module(f"tests.fuzz.{module}").targets():
            found[target.name] = target
    return found


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    crash = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    target = all_targets()[crash["target"]]
    target.check(from_jsonable(crash["input"]))
    print(f"{crash['target']}: no crash now")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
