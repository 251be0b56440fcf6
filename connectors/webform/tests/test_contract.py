"""The kernel's connector contract, run against the web form connector's captured fixtures."""

from __future__ import annotations

import json
from pathlib import Path

from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from connectors.webform import CHANNEL
from intake.testing import ConnectorContract

EXAMPLE = Path(__file__).resolve().parent.parent / "example.yaml"


class TestWebformContract(ConnectorContract):
    channel = CHANNEL
    config = EXAMPLE

    async def send_fixture(self, client: TestClient, fixture: Path) -> ClientResponse:
        # `contact_json.json` is a submission to the `contact` form.
        form_id = fixture.stem.split("_", 1)[0]
        headers_file = fixture.with_name(fixture.stem + ".headers.json")
        headers = json.loads(headers_file.read_bytes())
        body = fixture.read_bytes()
        return await client.post(f"/forms/{form_id}/submissions", data=body, headers=headers)
