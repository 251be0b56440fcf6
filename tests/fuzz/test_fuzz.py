"""Every fuzz target of every `targets_*.py` module: no input raises out of its entry point."""

from __future__ import annotations

import pytest

from .harness import run_target
from .replay import all_targets

TARGETS = all_targets()


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_no_input_crashes(name: str) -> None:
    run_target(TARGETS[name])
