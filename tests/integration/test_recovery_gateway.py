"""Issue 10, item 1 with the gateway running: `rabbitmqctl delete_queue`, and nothing is lost."""

from __future__ import annotations

import asyncio
import shutil

import aiohttp
import pytest

from intake.bus import Bus
from intake.settings import IntakeSettings
from tests.e2e.test_webform_to_ticket import Gateway, running_gateway
from tests.support import eventually


async def delete_queue(settings: IntakeSettings, name: str) -> None:
    """`rabbitmqctl delete_queue` where it can run, else the same through AMQP."""
    rabbitmqctl = shutil.which("rabbitmqctl")
    if rabbitmqctl:
        process = await asyncio.create_subprocess_exec(
            rabbitmqctl, "delete_queue", name, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL)
        if await asyncio.wait_for(process.wait(), 90) == 0:
            return
    ops = Bus(settings, "ops")
    await ops.connect(timeout=15)
    try:
        assert ops._connection is not None
        channel = await ops._connection.channel()
        await channel.queue_delete(name)
        await channel.close()
    finally:
        await ops.close()


async def submit(http: aiohttp.ClientSession, gw: Gateway, key: str) -> None:
    submission = {"name": "Li Lei", "email": f"{key}@example.com", "topic": "complaint",
                  "subject": key, "message": "Where is my order?", "consent": "on"}
    async with http.post(f"{gw.form}/forms/contact/submissions", json=submission,
                         headers={"Idempotency-Key": key}) as response:
        assert response.status == 201, await response.text()


async def ticket_count(http: aiohttp.ClientSession, gw: Gateway, keys: list[str]) -> int:
    found = 0
    for key in keys:
        async with http.get(f"{gw.api}/api/v1/tickets",
                            params={"idempotency_key": f"webform:contact:{key}"},
                            headers=gw.headers()) as response:
            assert response.status == 200, await response.text()
            found += len((await response.json())["items"])
    return found


async def all_stored(http: aiohttp.ClientSession, gw: Gateway, keys: list[str]) -> bool:
    return await ticket_count(http, gw, keys) == len(keys)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("queue", ["ticket_core", "router"])
async def test_a_queue_deleted_under_the_running_gateway_comes_back_and_loses_nothing(
        settings: IntakeSettings, monkeypatch: pytest.MonkeyPatch, queue: str) -> None:
    async with running_gateway(settings, monkeypatch) as gw, aiohttp.ClientSession() as http:
        before = [f"before-{queue}-{i}" for i in range(5)]
        for key in before:
            await submit(http, gw, key)
        await eventually(lambda: all_stored(http, gw, before), timeout=30)
        await delete_queue(settings, f"{settings.bus_prefix}.intake.{queue}")
        meanwhile = [f"meanwhile-{queue}-{i}" for i in range(20)]
        for key in meanwhile:
            await submit(http, gw, key)
        # Each submission becomes one ticket: none lost on the way, none stored twice.
        await eventually(lambda: all_stored(http, gw, meanwhile), timeout=60)
        assert await ticket_count(http, gw, [*before, *meanwhile]) == 25

        async def all_ready() -> bool:
            for base in (gw.api, gw.router):
                async with http.get(f"{base}/readyz") as response:
                    if response.status != 200:
                        return False
            return True

        await eventually(all_ready, timeout=30)
