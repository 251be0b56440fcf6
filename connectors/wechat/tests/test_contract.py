"""The kernel's connector contract, run against the WeChat connector's fixtures.

Each fixture is the plaintext callback; `send_fixture` signs it now (timestamps must be fresh)
and encrypts it for a safe, compatible or WeCom account, with wechatpy (tests/simulator.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from connectors.wechat import CHANNEL
from intake.testing import ConnectorContract

from .simulator import EXAMPLE, account_of_fixture, callback


class TestWechatContract(ConnectorContract):
    channel = CHANNEL
    config = EXAMPLE

    async def send_fixture(self, client: TestClient[Any, Any], fixture: Path) -> ClientResponse:
        request = callback(account_of_fixture(fixture.name), fixture.read_text(encoding="utf-8"))
        return await client.post(request.path, params=request.query, data=request.body)
