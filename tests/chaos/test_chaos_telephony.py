"""The quick telephony chaos run inside `make test`: 150 calls through the generic CTI webhook
while the connector is SIGKILLed and its broker link drops (tests/chaos/telephony.py)."""

from __future__ import annotations

import asyncio

import pytest

from .run import QUICK
from .telephony import telephony_faults
from .test_chaos_quick import lab  # noqa: F401  (the module's RabbitMQ node and PostgreSQL)

CALLS = 150
RATE = 6.0  # calls started per second: the faults land mid-stream


@pytest.mark.rabbitmq
@pytest.mark.postgres
@pytest.mark.timeout(330)
def test_every_accepted_call_is_one_record_and_one_pop(lab) -> None:  # noqa: F811
    lab.rate = RATE
    result = asyncio.run(telephony_faults(lab, CALLS, **QUICK["telephony_faults"]))
    outcome = result.outcome
    assert outcome.accepted == CALLS, result.as_dict()
    assert outcome.lost == 0, result.as_dict()
    assert outcome.duplicated_messages == 0 and outcome.duplicated_tickets == 0, \
        result.as_dict()
    assert result.problems == [], result.as_dict()
