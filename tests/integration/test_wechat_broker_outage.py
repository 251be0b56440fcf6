"""WeChat's five-second rule with the broker down: callbacks are answered from the outbox within
a second, and reach the broker once each when it returns.

On a RabbitMQ node of its own (tests/chaos/harness.py), stopped and started again in place.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from connectors.wechat import CHANNEL as WECHAT
from connectors.wechat.tests.fake_wechat import FakeWechat
from connectors.wechat.tests.simulator import WECOM, callback, text_xml
from intake.cli import load_config
from intake.service import serve
from intake.settings import IntakeSettings
from tests.chaos.harness import RABBITMQ_SERVER, RabbitNode, free_port
from tests.support import eventually


@pytest.fixture(scope="module")
def node() -> Iterator[RabbitNode]:
    if os.geteuid() != 0 or not os.access(RABBITMQ_SERVER, os.X_OK):
        pytest.skip("a private RabbitMQ node needs root and rabbitmq-server")
    node = RabbitNode()
    try:
        node.start()
        yield node
    finally:
        node.destroy()


@pytest.fixture
async def fake() -> AsyncIterator[FakeWechat]:
    server = await FakeWechat().start()
    yield server
    await server.close()


def router_depth(node: RabbitNode, prefix: str) -> int:
    result = node.ctl("list_queues", "name", "messages", "--quiet")
    for line in result.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == f"{prefix}.intake.router":
            return int(parts[1])
    return -1


@pytest.mark.timeout(240)
async def test_callbacks_are_answered_from_the_outbox_and_published_once_when_it_returns(
        node: RabbitNode, fake: FakeWechat, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    monkeypatch.setenv("INTAKE_WECHAT_PORT", str(port))
    monkeypatch.setenv("INTAKE_WECHAT_API_BASE", fake.url)
    prefix = f"w{os.getpid()}"
    settings = IntakeSettings(amqp_url=node.url, bus_prefix=prefix, data_dir=tmp_path)
    service = WECHAT.build_service(settings, load_config(settings))
    stop, started = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(serve([service], stop=stop, started=lambda _: started.set()))
    await asyncio.wait_for(started.wait(), 30)
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            async def ready() -> bool:
                async with http.get(f"{base}/readyz") as response:
                    return response.status == 200
            await eventually(ready, timeout=30)
            await asyncio.to_thread(node.stop)
            await asyncio.sleep(1.0)  # the connection's loss is noticed
            slowest = 0.0
            for number in range(10):
                request = callback(WECOM, text_xml(WECOM, f"m{number}", msg_id=str(900 + number)))
                for _ in range(2 if number % 3 == 0 else 1):  # some retried by WeChat
                    started_at = time.monotonic()
                    async with http.post(f"{base}{request.path}", params=request.query,
                                         data=request.body) as response:
                        assert response.status == 200, await response.text()
                    slowest = max(slowest, time.monotonic() - started_at)
            assert slowest < 1.0, slowest
            await asyncio.to_thread(node.start)

            async def all_there() -> bool:
                return await asyncio.to_thread(router_depth, node, prefix) == 10
            await eventually(all_there, timeout=90)
            await asyncio.sleep(2)
            assert await asyncio.to_thread(router_depth, node, prefix) == 10
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
