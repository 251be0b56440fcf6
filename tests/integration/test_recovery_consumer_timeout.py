"""`consumer_timeout` during a long database outage: the broker closes the consumer's channel.

On a RabbitMQ node of its own (tests/chaos/harness.py) with `consumer_timeout` at two seconds
and a channel tick of a quarter second, so that the broker acts within the test.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from intake.bus import Bus
from intake.errors import StorageUnavailable
from intake.message import Message
from intake.settings import IntakeSettings
from tests.chaos.harness import RABBITMQ_SERVER, RabbitNode
from tests.factories import form_message
from tests.support import eventually

CONSUMER_TIMEOUT_MS = 2000


class ImpatientRabbitNode(RabbitNode):
    """A private node whose broker closes a channel holding a delivery for two seconds."""

    def __init__(self) -> None:
        super().__init__()
        with (self.base / "rabbitmq.conf").open("a") as config:
            config.write(f"consumer_timeout = {CONSUMER_TIMEOUT_MS}\n")
        # The timeout is checked on the channel's tick, once a minute by default.
        advanced = self.base / "advanced.config"
        advanced.write_text("[{rabbit, [{channel_tick_interval, 250}]}].\n")
        shutil.chown(advanced, "rabbitmq", "rabbitmq")

    def _env(self) -> dict[str, str]:
        env = super()._env()
        env["RABBITMQ_ADVANCED_CONFIG_FILE"] = str(self.base / "advanced.config")
        return env


@pytest.fixture(scope="module")
def impatient_node() -> Iterator[RabbitNode]:
    if os.geteuid() != 0 or not os.access(RABBITMQ_SERVER, os.X_OK):
        pytest.skip("a private RabbitMQ node needs root and rabbitmq-server")
    node = ImpatientRabbitNode()
    try:
        node.start()
        yield node
    finally:
        node.destroy()


@pytest.mark.timeout(180)
async def test_a_channel_closed_by_consumer_timeout_is_consumed_again_and_nothing_is_lost(
        impatient_node: RabbitNode, settings: IntakeSettings,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import intake.bus.consumer

    monkeypatch.setattr(intake.bus.consumer, "HOLD_FIRST_RETRY_S", 0.05)
    bus = Bus(settings.model_copy(update={"amqp_url": impatient_node.url}), "ticket-core")
    database_up = asyncio.Event()
    stored: list[str] = []
    tries = 0

    async def persist(messages: list[Message]) -> None:
        nonlocal tries
        tries += 1
        if not database_up.is_set():
            raise StorageUnavailable("database down for longer than consumer_timeout")
        stored.extend(m.idempotency_key for m in messages)

    try:
        await bus.connect(timeout=30)
        bus.consume_batches("ticket_core", persist, Message, max_batch=10)
        assert await bus.supervisor.wait_up("consumer:ticket_core", 15)
        sent = form_message("outage")
        await bus.publish("routed", "support", sent.model_dump_json().encode())
        # Held while the database is down: unready, with the consumer named.
        await eventually(lambda: "consumer:ticket_core" in bus.problems())
        # The broker loses patience and closes the channel; the consumer comes back on a new one.
        state: Any = bus.supervisor.states()["consumer:ticket_core"]
        await eventually(lambda: state.restarts >= 1, timeout=30)
        assert "channel closed" in (state.error or "")
        await eventually(lambda: bus.supervisor.is_up("consumer:ticket_core"), timeout=15)
        database_up.set()
        await eventually(lambda: sent.idempotency_key in stored, timeout=30)
        await eventually(lambda: bus.problems() == {}, timeout=15)
        # At least once: a duplicate is harmless, a loss or a dead letter is not.
        assert set(stored) == {sent.idempotency_key}
        assert await bus.browse_dead() == []
    finally:
        await bus.close()
