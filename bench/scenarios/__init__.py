"""The scenarios: one module each, found by walking this package (no list to edit).

A module exports `SCENARIOS`, a list of `Scenario` objects; a connector's module also exports
`LOAD` (a `bench.traffic.ConnectorLoad`), which gives it closed-loop, open-loop and sweep
scenarios from `bench.traffic.connector_scenarios` and a share of the mixed scenario.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Any

from bench.result import Scenario


def discover() -> tuple[list[Scenario], list[Any]]:
    """Every scenario (in run order) and every connector load, from this package's modules."""
    scenarios: list[Scenario] = []
    loads: list[Any] = []
    for info in sorted(pkgutil.iter_modules([str(Path(__file__).parent)]),
                       key=lambda i: i.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        scenarios.extend(getattr(module, "SCENARIOS", ()))
        if getattr(module, "LOAD", None) is not None:
            loads.append(module.LOAD)
    scenarios.sort(key=lambda s: s.order)
    return scenarios, loads
