"""A relay's permanent refusal on the real broker: the reply is `failed` (`relay_rejected`) and
dead-lettered with the relay's answer; `intake dlq replay` sends it once the relay takes it,
once, under the same Message-ID; a 4xx waits in the retry queue with growing back-off."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from connectors.email.outbound import RETRY_DELAYS_S, EmailSender
from intake import OutboundMessage, SenderRunner, StateStore
from intake.bus import Bus
from intake.settings import IntakeSettings
from tests.conftest import delete_topology, require_rabbitmq
from tests.integration.test_dead_letters import delete_streams
from tests.integration.test_sending import Results, drop_queues, listen_for_results, publish

from .sink import Sink
from .test_outbound import ACCOUNT, accounts_for, outbound, results


@pytest.fixture
async def bus(tmp_path: Path) -> AsyncIterator[Bus]:
    require_rabbitmq()
    settings = IntakeSettings(bus_prefix=f"t{time.monotonic_ns() % 10**10}", data_dir=tmp_path,
                              delivery_limit=4, publish_timeout_s=3)
    started = Bus(settings, "email")
    await started.connect(timeout=15)
    yield started
    await delete_streams(started)
    await delete_topology(started)
    await started.close()


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    started = await Sink().start()
    yield started
    await started.stop()


@pytest.fixture
async def delivery(bus: Bus) -> Results:
    return await listen_for_results(bus)


@pytest.fixture
async def runner(bus: Bus, sink: Sink, tmp_path: Path,
                 delivery: Results) -> AsyncIterator[SenderRunner]:
    started = SenderRunner(bus, "email", EmailSender,
                           StateStore(f"sqlite+aiosqlite:///{tmp_path / 'state.sqlite3'}"),
                           accounts=accounts_for(sink.port), poll_s=0.1)
    await started.start()
    yield started
    await started.close()
    await drop_queues(bus, "outbound.email", f"{bus.service}.results")


async def test_a_5xx_is_failed_dead_lettered_and_sent_once_after_a_replay(
        bus: Bus, sink: Sink, runner: SenderRunner, delivery: Results) -> None:
    sink.answers.append("554 5.7.1 sender address rejected by policy")
    message = outbound(kind="reply")
    await publish(bus, message)

    [failed] = await delivery.wait_for(1)
    assert (failed.outbound_id, failed.status, failed.reason) == (
        message.id, "failed", "relay_rejected")
    assert sink.mails == [] and sink.answers == []
    [letter] = await bus.browse_dead()
    assert letter.reason == "relay_rejected"
    assert letter.error == "554 5.7.1 sender address rejected by policy"
    assert letter.routing_key == f"email.{ACCOUNT}"
    assert OutboundMessage.model_validate_json(letter.body).id == message.id

    # The relay's policy fixed: the replay sends it, reported `sent` as a later attempt (the
    # ticket core lets it replace the `failed`).
    assert await bus.replay_dead([letter.id]) == [letter.id]
    sent = (await delivery.wait_for(2))[1]
    assert (sent.status, sent.attempt) == ("sent", 2)
    [mail] = sink.mails
    assert mail["Message-ID"] == sent.provider_message_id == f"<1042.{message.id}@shop.example>"

    # The same message once more (a broker redelivery): its result again, no second mail.
    await publish(bus, message)
    again = (await delivery.wait_for(3))[2]
    assert (again.status, again.attempt) == ("sent", 2)
    assert len(sink.mails) == 1 and await bus.browse_dead() == []


async def test_a_dead_letter_the_broker_refuses_leaves_the_reply_in_the_retry_queue(
        bus: Bus, sink: Sink, runner: SenderRunner, delivery: Results) -> None:
    async def refuse(*args: object, **kwargs: object) -> str:
        raise ConnectionError("the broker is gone (test)")

    sink.answers.append("550 5.1.1 no such user")
    dead_letter, bus.dead_letter = bus.dead_letter, refuse  # type: ignore[method-assign]
    try:
        await runner.handle(outbound(kind="reply"))
    finally:
        bus.dead_letter = dead_letter  # type: ignore[method-assign]
    assert delivery.items == [] and await runner.retries.depth() == 1  # kept, never dropped
    assert await runner.retry_due(due_by=time.time() + 3600) == 1
    [result] = await delivery.wait_for(1)
    assert result.status == "sent" and len(sink.mails) == 1


async def test_a_4xx_is_retried_with_growing_back_off_then_sent(
        sink: Sink, tmp_path: Path) -> None:
    from intake.testing import MemoryBus

    started = SenderRunner(MemoryBus(), "email", EmailSender,
                           StateStore(f"sqlite+aiosqlite:///{tmp_path / 'state.sqlite3'}"),
                           accounts=accounts_for(sink.port), poll_s=3600)
    await started.open()
    try:
        sink.answers.extend(["451 4.7.1 greylisted", "421 4.3.2 busy"])
        await started.handle(outbound(kind="reply"))
        waits = [await started.retries.next_due_in()]
        assert await started.retry_due(due_by=time.time() + 86400) == 1
        waits.append(await started.retries.next_due_in())
        assert [round(w or 0) for w in waits] == [round(d) for d in RETRY_DELAYS_S[:2]]
        assert results(started) == [] and sink.mails == []
        assert await started.retry_due(due_by=time.time() + 86400) == 1
        assert results(started) == [("sent", None)] and len(sink.mails) == 1
        assert started.bus.dead == []  # type: ignore[attr-defined]
    finally:
        await started.close()
