"""The one-minute chaos run inside `make test`: every scenario with a short stream, few faults.

`make chaos` runs the same scenarios with 10,000 submissions each (tests/chaos/README.md).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import pytest

from .harness import HarnessUnavailable, check_prerequisites
from .run import QUICK
from .scenarios import SCENARIOS, Lab

COUNT = 300
# The cluster scenario kills two nodes mid-stream: a longer stream so both land inside it.
COUNTS = {"cluster_leader_kill": 1000}
RATE = 100.0  # submissions per second: the faults land mid-stream, not after it
IN_CI = os.environ.get("CI") == "true"
# broker_outage is the long form of outbox_full's first half; the quick run keeps the latter.
QUICK_SCENARIOS = [name for name in SCENARIOS if name != "broker_outage"]


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    try:
        check_prerequisites()
    except HarnessUnavailable as exc:
        if IN_CI:
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    lab = Lab.start()
    lab.rate = RATE
    lab.settle_s = 1.0
    try:
        yield lab
    finally:
        lab.destroy()


@pytest.mark.rabbitmq
@pytest.mark.postgres
# Off make test's critical path (it runs beside the rest); long enough for a scenario's own
# waits to end first and report what is missing, rather than a bare timeout.
@pytest.mark.timeout(330)
@pytest.mark.parametrize("name", QUICK_SCENARIOS)
def test_nothing_lost_nothing_doubled(lab: Lab, name: str) -> None:
    count = COUNTS.get(name, COUNT)
    result = asyncio.run(SCENARIOS[name](lab, count, **QUICK[name]))
    outcome = result.outcome
    assert outcome.accepted == count, result.as_dict()
    assert outcome.lost == 0, result.as_dict()
    assert outcome.duplicated_messages == 0 and outcome.duplicated_tickets == 0, \
        result.as_dict()
    assert result.problems == [], result.as_dict()
