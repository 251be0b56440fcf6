"""Every fuzz target of every `targets_*.py` module: no input raises out of its entry point."""

from __future__ import annotations

import pytest

from .harness import run_target
from .replay import all_targets

# aiohttp warns about each malformed Content-Disposition the fuzzer invents; it then refuses the
# part, which is what the targets check.
pytestmark = pytest.mark.filterwarnings("ignore::aiohttp.multipart.BadContentDispositionHeader")

TARGETS = all_targets()


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_no_input_crashes(name: str) -> None:
    run_target(TARGETS[name])
