"""The SDK's edge on a test server: in-memory publisher and blobs, SQLite state in a temp dir."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from connectors.sdk import CHANNEL
from connectors.sdk.inbound.identity import user_hash
from intake.testing import ContractEdge, RecordingPublisher

EXAMPLE = Path(__file__).resolve().parent.parent / "example.yaml"
APP_SECRET = "demo-app-identity-secret-for-tests-only-7f3a9c"
WIDGET_SECRET = "demo-widget-identity-secret-for-tests-only-2b8e41"


@pytest.fixture
def publisher() -> RecordingPublisher:
    return RecordingPublisher()


@pytest.fixture
async def edge(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
               publisher: RecordingPublisher) -> AsyncIterator[ContractEdge]:
    monkeypatch.setenv("INTAKE_DATA_DIR", str(tmp_path))
    edge = await ContractEdge.start(CHANNEL, EXAMPLE, publisher)
    yield edge
    await edge.close()


class Sdk:
    """A client of one app over the test server."""

    def __init__(self, edge: ContractEdge, app: str) -> None:
        self.client = edge.client
        self.app = app
        self.base = f"/sdk/v1/apps/{app}"

    async def session(self, body: dict[str, Any], status: int = 201) -> dict[str, Any]:
        response = await self.client.post(f"{self.base}/sessions", json=body)
        answer = await response.json()
        assert response.status == status, answer
        return answer  # type: ignore[no-any-return]

    async def signed(self, user_id: str, secret: str = APP_SECRET, **user: Any) -> str:
        answer = await self.session({"user": {"id": user_id, **user},
                                     "user_hash": user_hash(secret, user_id)})
        return str(answer["session_token"])

    async def call(self, method: str, path: str, token: str | None, body: Any = None,
                   **kwargs: Any) -> tuple[int, Any]:
        headers = dict(kwargs.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        response = await self.client.request(method, self.base + path, json=body,
                                             headers=headers, **kwargs)
        text = await response.text()
        return response.status, (await response.json()) if text else None


@pytest.fixture
def app_client(edge: ContractEdge) -> Sdk:
    return Sdk(edge, "demo-app")


@pytest.fixture
def widget_client(edge: ContractEdge) -> Sdk:
    return Sdk(edge, "demo-widget")
