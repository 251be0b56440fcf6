"""Shared fixtures: a per-test bus prefix on the real RabbitMQ, settings, a temp data dir."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from intake.bus import Bus
from intake.channel import find_channels
from intake.settings import IntakeSettings

IN_CI = os.environ.get("CI") == "true"


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def require_rabbitmq() -> None:
    if not _reachable("127.0.0.1", 5672):
        message = "RabbitMQ is not reachable at 127.0.0.1:5672 (run `make services`)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def bus_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def settings(tmp_path: Path, bus_prefix: str) -> IntakeSettings:
    require_rabbitmq()
    return IntakeSettings(bus_prefix=bus_prefix, data_dir=tmp_path, delivery_limit=4,
                          publish_timeout_s=3)


@pytest.fixture
async def bus(settings: IntakeSettings) -> AsyncIterator[Bus]:
    bus = Bus(settings, "test")
    await bus.connect(timeout=15)
    yield bus
    await delete_topology(bus)
    await bus.close()


async def delete_topology(bus: Bus) -> None:
    """Remove a test run's exchanges and queues from the shared broker.

    The bus's consumers stop first: a consumer whose queue is deleted under it declares the
    queue again (that is its recovery), which would leave the queue behind.
    """
    await bus.stop_consumers()
    # A test may have just cost the bus its publish channel (reopened in a moment).
    if not await bus.wait_connected(10) or bus._connection is None:
        return
    channel = await bus._connection.channel()
    try:
        outbound = [f"outbound.{name}" for name in sorted(find_channels()[0])]
        for queue in ("router", "ticket_core", "ticket_core.delivery", "dead", "dead.replayed",
                      *outbound):
            try:
                await channel.queue_delete(bus.names(queue))
            except Exception:
                channel = await bus._connection.channel()
        for exchange in ("inbound", "routed", "outbound", "delivery", "events", "dead"):
            try:
                await channel.exchange_delete(bus.names(exchange))
            except Exception:
                channel = await bus._connection.channel()
    finally:
        try:
            await channel.close()
        except Exception:
            pass
