"""The kernel's connector contract, run against the SDK's captured requests.

A fixture is a request as an SDK sends it, with the session it opens first (a `user_hash`
placeholder is signed here with the app's test secret). `/tickets/new/messages` is a chat
message opening a new chat ticket. Ticket and device ids are random in service; the suite
fixes them (a counter) so the expected messages stay comparable.
"""

from __future__ import annotations

import itertools
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from connectors.sdk import CHANNEL
from connectors.sdk.inbound.identity import user_hash
from connectors.sdk.inbound.runtime import runtime_for
from intake.testing import ConnectorContract

EXAMPLE = Path(__file__).resolve().parent.parent / "example.yaml"


@pytest.fixture(autouse=True)
def own_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTAKE_DATA_DIR", str(tmp_path))


def fixed_ids() -> Any:
    counter = itertools.count(1)
    return lambda: str(uuid.UUID(int=next(counter)))


class TestSdkContract(ConnectorContract):
    channel = CHANNEL
    config = EXAMPLE

    async def send_fixture(self, client: TestClient, fixture: Path) -> ClientResponse:
        spec = json.loads(fixture.read_bytes())
        app_id = spec["app"]
        runtime = runtime_for(client.app)
        if not getattr(runtime.state, "fixed", False):
            runtime.state.new_id = fixed_ids()
            runtime.state.fixed = True  # type: ignore[attr-defined]
        app = runtime.accounts.app(app_id)
        assert app is not None and app.identity_secret
        session_body = dict(spec["session"])
        if "user_hash" in session_body:
            session_body["user_hash"] = user_hash(app.identity_secret,
                                                  session_body["user"]["id"])
        base = f"/sdk/v1/apps/{app_id}"
        device: dict[str, str] = self.__dict__.setdefault("devices", {})
        if fixture.name in device:  # the visitor comes back on the same device
            session_body = {"device_token": device[fixture.name]}
        opened = await client.post(f"{base}/sessions", json=session_body)
        assert opened.status == 201, await opened.text()
        session = await opened.json()
        if "device_token" in session:
            device[fixture.name] = session["device_token"]
        request = spec["request"]
        return await client.request(
            request["method"], base + request["path"], json=request["body"],
            headers={"Authorization": f"Bearer {session['session_token']}"})
