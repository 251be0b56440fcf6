"""The kernel's connector contract, run against the telephony connector's fixtures."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from connectors.telephony import CHANNEL
from connectors.telephony.inbound.generic import sign
from intake.testing import ConnectorContract

EXAMPLE = Path(__file__).resolve().parent.parent / "example.yaml"
HOTLINE_SECRET = "whsec_aW50YWtlLWhvdGxpbmUtdGVzdC1zZWNyZXQtMDAx"  # the example's test value


class TestTelephonyContract(ConnectorContract):
    channel = CHANNEL
    config = EXAMPLE

    async def send_fixture(self, client: TestClient[Any, Any], fixture: Path) -> ClientResponse:
        """Posted as a PBX does: the captured webhook-id, signed now (the window is 300 s)."""
        headers = json.loads(fixture.with_name(fixture.stem + ".headers.json").read_bytes())
        body = fixture.read_bytes()
        stamp = int(time.time())
        headers["webhook-timestamp"] = str(stamp)
        headers["webhook-signature"] = sign(HOTLINE_SECRET, headers["webhook-id"], stamp, body)
        return await client.post("/cti/hotline/events", data=body, headers=headers)
