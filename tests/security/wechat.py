"""The WeChat edge for the hostile-input tests: its real routes and runtime, the fake WeChat
API (which records anything an XML entity might have made the connector fetch)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from connectors.wechat import CHANNEL
from connectors.wechat.inbound import runtime_context
from connectors.wechat.settings import WechatSettings
from connectors.wechat.tests.fake_wechat import FakeWechat
from connectors.wechat.tests.simulator import EXAMPLE
from intake.blobs import FileBlobStore
from intake.config import load_document
from intake.service import ACCOUNTS, BLOBS, PUBLISHER, SERVICE_SETTINGS, Service
from intake.settings import IntakeSettings
from intake.testing import RecordingPublisher


@asynccontextmanager
async def wechat_edge(tmp_path: Path, publisher: RecordingPublisher,
                      ) -> AsyncIterator[tuple[TestClient[Any, Any], FakeWechat]]:
    fake = await FakeWechat().start()
    settings = WechatSettings(api_base=fake.url, wecom_api_base=fake.url)
    blobs = FileBlobStore(tmp_path / "blobs")
    service = Service(
        name="wechat", port=0, settings=IntakeSettings(data_dir=tmp_path),
        routes=CHANNEL.http_routes(), contexts=[runtime_context],
        state={SERVICE_SETTINGS: settings,
               ACCOUNTS: CHANNEL.load_accounts(load_document(EXAMPLE)),
               PUBLISHER: publisher, BLOBS: blobs},
        client_max_size=settings.max_body_bytes + 64 * 1024)
    client: TestClient[Any, Any] = TestClient(TestServer(service.build_app()))
    await client.start_server()
    try:
        yield client, fake
    finally:
        await client.close()
        await blobs.close()
        await fake.close()
