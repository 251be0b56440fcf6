"""The sender runner's decisions, offline: outcomes, exceptions, timeouts and `Taken` senders."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from intake import (
    Failed,
    Identity,
    OutboundMessage,
    Rejected,
    SenderKit,
    SenderRunner,
    Sent,
    StateStore,
    Suppressed,
    Taken,
    Transient,
)
from intake.testing import MemoryBus


def outbound() -> OutboundMessage:
    return OutboundMessage(idempotency_key=f"reply:{uuid.uuid4()}", ticket_id="t-1",
                           channel="email", account="support@example.com",
                           to=Identity(kind="email", value="ann@example.com"), text="Hello")


class ScriptedSender:
    """Does what the test says, once per send; counts the sends."""

    max_attempts = 2
    retry_delays_s = (3600.0,)
    send_timeout_s = 0.2

    def __init__(self, kit: SenderKit) -> None:
        self.kit = kit
        self.script: list[Any] = []
        self.sends = 0
        self.taken: list[OutboundMessage] = []

    async def send(self, message: OutboundMessage) -> Any:
        self.sends += 1
        step = self.script.pop(0) if self.script else Sent("p-1")
        if isinstance(step, BaseException):
            raise step
        if step == "hang":
            await asyncio.sleep(10)
        if isinstance(step, Taken):
            self.taken.append(message)
        return step


@pytest.fixture
async def runner(tmp_path: Path) -> AsyncIterator[SenderRunner]:
    runner = SenderRunner(MemoryBus(), "email", ScriptedSender,
                          StateStore(f"sqlite+aiosqlite:///{tmp_path / 'state.sqlite3'}"),
                          poll_s=3600)
    await runner.open()
    yield runner
    await runner.close()
    await runner.state.close()


def sender_of(runner: SenderRunner) -> ScriptedSender:
    assert isinstance(runner.sender, ScriptedSender)
    return runner.sender


def results(runner: SenderRunner) -> list[tuple[str, str | None, int]]:
    bus = runner.bus
    assert isinstance(bus, MemoryBus)
    return [(r.status, r.reason, r.attempt) for _, r in bus.results]


@pytest.mark.parametrize(("raised", "reason"), [
    (Rejected("mailbox unknown", reason="recipient_unknown"), "recipient_unknown"),
    (RuntimeError("the client library broke"), "sender_error"),
])
async def test_a_refusal_or_an_unexpected_error_is_failed_and_never_sent_again(
        runner: SenderRunner, raised: BaseException, reason: str) -> None:
    sender_of(runner).script = [raised]
    message = outbound()
    await runner.handle(message)
    await runner.handle(message)
    assert results(runner) == [("failed", reason, 1)] * 2
    assert sender_of(runner).sends == 1


async def test_a_suppressed_message_is_reported_suppressed_with_its_reason_once(
        runner: SenderRunner) -> None:
    sender_of(runner).script = [Suppressed("cap")]
    message = outbound()
    await runner.handle(message)
    await runner.handle(message)  # a redelivery reports it again and does not send
    assert results(runner) == [("suppressed", "cap", 1)] * 2
    assert sender_of(runner).sends == 1


async def test_a_raised_transient_is_retried_and_the_attempts_end_failed(
        runner: SenderRunner) -> None:
    sender_of(runner).script = [Transient("greylisted", reason="smtp_451"),
                                Transient("greylisted", reason="smtp_451")]
    await runner.handle(outbound())
    assert results(runner) == [] and await runner.retries.depth() == 1
    assert await runner.retry_due(due_by=1e12) == 1
    assert results(runner) == [("failed", "smtp_451", 2)]  # max_attempts = 2
    assert await runner.retries.depth() == 0


async def test_a_send_past_its_timeout_is_outcome_unknown(runner: SenderRunner) -> None:
    sender_of(runner).script = ["hang"]
    await runner.handle(outbound())
    assert results(runner) == [("failed", "outcome_unknown", 1)]


async def test_a_taken_message_is_acked_and_reported_later_through_the_kernel(
        runner: SenderRunner) -> None:
    sender = sender_of(runner)
    sender.script = [Taken()]
    message = outbound()
    await runner.handle(message)
    assert results(runner) == [] and sender.taken == [message]
    await runner.handle(message)  # redelivered while the sender holds it: not sent again
    assert sender.sends == 1 and results(runner) == []
    # Hours later the sender's own queue gets it out, on its third try.
    await sender.kit.report(message, Sent("smtp-250-queued"), attempt=3)
    await runner.handle(message)  # and a late redelivery republishes that result
    assert results(runner) == [("sent", None, 3)] * 2


async def test_a_message_taken_with_a_status_reports_it_now_and_the_later_attempt_outranks_it(
        runner: SenderRunner) -> None:
    """WeChat's closed window: `window_expired` at once, `sent` as a later attempt."""
    bus = runner.bus
    assert isinstance(bus, MemoryBus)
    sender = sender_of(runner)
    sender.script = [Taken(status="window_expired", reason="45015 window closed")]
    message = outbound()
    bus.refuse = 1  # the held result is not confirmed: the redelivery publishes it again
    with pytest.raises(Transient):
        await runner.handle(message)
    await runner.handle(message)
    assert sender.sends == 1
    assert results(runner) == [("window_expired", "45015 window closed", 1)]
    await sender.kit.report(message, Sent("msg-2"), attempt=2)
    assert results(runner)[-1] == ("sent", None, 2)


async def test_a_report_the_broker_did_not_take_can_be_made_again(
        runner: SenderRunner) -> None:
    bus = runner.bus
    assert isinstance(bus, MemoryBus)
    message = outbound()
    bus.refuse = 1
    with pytest.raises(Transient):
        await runner.record(message, Failed("window_closed"), attempt=2)
    await runner.record(message, Failed("window_closed"), attempt=2)
    assert results(runner) == [("failed", "window_closed", 2)]
