"""The SDK's quick chaos run: 500 chat messages from 20 socket clients while the connector is
SIGKILLed and the broker drops its links; every ack stored once (tests/chaos/sdk.py)."""

from __future__ import annotations

import asyncio

import pytest

from .run import QUICK
from .scenarios import Lab
from .sdk import sdk_socket_faults
from .test_chaos_quick import lab  # noqa: F401  (the module's own broker node and PostgreSQL)

COUNT = 500
RATE = 25.0  # messages per second: a 20 s stream, both faults land inside it


@pytest.mark.rabbitmq
@pytest.mark.postgres
@pytest.mark.timeout(330)
def test_sdk_sockets_lose_and_double_nothing(lab: Lab) -> None:  # noqa: F811
    lab.rate = RATE
    result = asyncio.run(sdk_socket_faults(lab, COUNT, **QUICK["sdk_socket_faults"]))
    outcome = result.outcome
    assert outcome.accepted == COUNT, result.as_dict()
    assert outcome.lost == 0, result.as_dict()
    assert outcome.duplicated_messages == 0 and outcome.duplicated_tickets == 0, \
        result.as_dict()
    assert result.problems == [], result.as_dict()
    # Both faults reached the clients: sockets were closed under them and opened again.
    assert sum(result.notes["socket_closes"].values()) >= 20, result.as_dict()
