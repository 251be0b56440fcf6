"""After start-up a service keeps its long-lived heap out of garbage collection."""

from __future__ import annotations

import gc

from intake.service import settle_garbage_collector


def test_the_start_up_heap_is_frozen_and_collections_are_rare() -> None:
    thresholds = gc.get_threshold()
    try:
        settle_garbage_collector()
        assert gc.get_freeze_count() > 10_000  # the interpreter's and the imports' objects
        assert gc.get_threshold()[0] >= 50_000
        cycle: list[object] = []
        cycle.append(cycle)
        del cycle
        assert gc.collect() >= 1  # cycles are still collected, only less often
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
