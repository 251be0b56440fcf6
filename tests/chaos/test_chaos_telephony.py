"""The quick telephony chaos run inside `make test`: 150 calls through the generic CTI webhook
while the connector is SIGKILLed and its broker link drops, and 25 calls each from a live fake
Asterisk (AMI) and FreeSWITCH (ESL) that go on while their links are cut and the connector is
dead (tests/chaos/telephony.py, telephony_pbx.py)."""

from __future__ import annotations

import asyncio

import pytest

from .run import QUICK
from .telephony import telephony_faults
from .test_chaos_quick import lab  # noqa: F401  (the module's RabbitMQ node and PostgreSQL)

CALLS = 150
RATE = 6.0  # calls started per second: the faults land mid-stream
PBX_CALLS = QUICK["telephony_faults"]["pbx_calls"]  # per live PBX, AMI and ESL


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
    print({line: result.notes.get(line) for line in ("asterisk-lab", "freeswitch-lab")})
    assert result.problems == [], (result.problems, result.notes)
    for line in ("asterisk-lab", "freeswitch-lab"):  # the live PBXs' calls (telephony_pbx.py)
        notes = result.notes[line]
        assert notes["calls"] == PBX_CALLS, result.notes
        assert notes["records"] == PBX_CALLS - notes["calls_not_seen"], result.notes
