"""Fixtures: the WeChat edge with its runtime, a recording publisher, the fake WeChat API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from connectors.wechat import CHANNEL
from connectors.wechat.inbound import RUNTIME, WechatRuntime, runtime_context
from connectors.wechat.settings import WechatSettings
from intake.blobs import FileBlobStore
from intake.config import load_document
from intake.service import ACCOUNTS, BLOBS, PUBLISHER, SERVICE_SETTINGS, Service
from intake.settings import IntakeSettings
from intake.testing import RecordingPublisher

from .fake_wechat import FakeWechat
from .simulator import EXAMPLE, Request


@dataclass
class Edge:
    client: TestClient[Any, Any]
    publisher: RecordingPublisher
    blobs: FileBlobStore
    fake: FakeWechat
    runtime: WechatRuntime

    async def send(self, request: Request) -> tuple[int, str]:
        response = await self.client.post(request.path, params=request.query,
                                          data=request.body)
        return response.status, await response.text()

    async def get(self, request: Request) -> tuple[int, str]:
        response = await self.client.get(request.path, params=request.query)
        return response.status, await response.text()

    async def drain_work(self, timeout_s: float = 10.0) -> None:
        """Run the work queue until it is empty (media and lookups done)."""
        async with asyncio.timeout(timeout_s):
            while await self.runtime.state.work.depth():
                if not await self.runtime.worker.run_due():
                    await asyncio.sleep(0.05)


@pytest.fixture
async def fake() -> AsyncIterator[FakeWechat]:
    server = await FakeWechat().start()
    yield server
    await server.close()


@pytest.fixture
async def make_edge(tmp_path: Path,
                    fake: FakeWechat) -> AsyncIterator[Callable[..., Awaitable[Edge]]]:
    made: list[Edge] = []

    async def make(publisher: Any = None, **overrides: Any) -> Edge:
        doc = load_document(EXAMPLE)
        settings = WechatSettings(api_base=fake.url, wecom_api_base=fake.url, **overrides)
        publisher = publisher or RecordingPublisher()
        blobs = FileBlobStore(tmp_path / "blobs")
        service = Service(
            name="wechat", port=0, settings=IntakeSettings(data_dir=tmp_path),
            routes=CHANNEL.http_routes(), contexts=[runtime_context],
            state={SERVICE_SETTINGS: settings, ACCOUNTS: CHANNEL.load_accounts(doc),
                   PUBLISHER: publisher, BLOBS: blobs},
            client_max_size=settings.max_body_bytes + 64 * 1024)
        app = service.build_app()
        client: TestClient[Any, Any] = TestClient(TestServer(app))
        await client.start_server()
        edge = Edge(client, publisher, blobs, fake, app[RUNTIME])
        made.append(edge)
        return edge

    yield make
    for edge in made:
        await edge.client.close()
        await edge.blobs.close()


@pytest.fixture
async def edge(make_edge: Callable[..., Awaitable[Edge]]) -> Edge:
    return await make_edge()
