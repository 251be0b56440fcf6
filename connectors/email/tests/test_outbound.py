"""EmailSender against an aiosmtpd sink: the sender contract, the mail it builds, the loop
breaker."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from connectors.email import CHANNEL
from connectors.email.outbound import EmailSender
from connectors.email.settings import EmailAccounts, OutboundRelay
from connectors.email.state import EmailState
from intake import Identity, OutboundMessage, SenderRunner, StateStore, Thread, load_document
from intake.testing import MemoryBus, SenderContract

from .sink import Sink

EXAMPLE = Path(__file__).resolve().parent.parent / "example.yaml"
ACCOUNT = "support@shop.example"


def accounts_for(port: int) -> EmailAccounts:
    loaded = CHANNEL.load_accounts(load_document(EXAMPLE))
    assert isinstance(loaded, EmailAccounts)
    relay = OutboundRelay(host="127.0.0.1", port=port, security="none")
    return loaded.model_copy(update={"accounts": [
        a.model_copy(update={"outbound": relay}) if a.id == ACCOUNT else a
        for a in loaded.accounts]})


async def open_runner(tmp_path: Path, port: int) -> SenderRunner:
    runner = SenderRunner(MemoryBus(), "email", EmailSender,
                          StateStore(f"sqlite+aiosqlite:///{tmp_path / 'state.sqlite3'}"),
                          accounts=accounts_for(port), poll_s=3600)
    await runner.open()
    return runner


def outbound_id(mail: Any) -> str:
    match = re.fullmatch(r"<\d+\.([0-9a-f-]{36})@shop\.example>", str(mail["Message-ID"]))
    assert match, mail["Message-ID"]
    return match.group(1)


class TestEmailSenderContract(SenderContract):
    channel = CHANNEL
    account = ACCOUNT
    recipient = Identity(kind="email", value="li@example.cn")
    failure = "retried"

    @pytest.fixture
    async def runner(self, bus: MemoryBus, tmp_path: Path) -> AsyncIterator[SenderRunner]:
        self.sink = await Sink().start()
        runner = SenderRunner(bus, "email", EmailSender,
                              StateStore(f"sqlite+aiosqlite:///{tmp_path / 'state.sqlite3'}"),
                              accounts=accounts_for(self.sink.port), poll_s=3600)
        await runner.open()
        yield runner
        await runner.close()
        await self.sink.stop()

    def delivered(self, sender: Any) -> list[str]:
        return [outbound_id(mail) for mail in self.sink.mails]

    def break_transport(self, sender: Any) -> None:
        self.sink.answers.append("451 4.7.1 greylisted, try again")


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    started = await Sink().start()
    yield started
    await started.stop()


@pytest.fixture
async def runner(sink: Sink, tmp_path: Path) -> AsyncIterator[SenderRunner]:
    started = await open_runner(tmp_path, sink.port)
    yield started
    await started.close()


def results(runner: SenderRunner) -> list[tuple[str, str | None]]:
    assert isinstance(runner.bus, MemoryBus)
    return [(r.status, r.reason) for _, r in runner.bus.results]


def outbound(**changes: Any) -> OutboundMessage:
    fields: dict[str, Any] = {
        "idempotency_key": f"ack:{uuid.uuid4()}", "ticket_id": "t-1", "ticket_number": "1042",
        "channel": "email", "account": ACCOUNT, "kind": "auto_reply",
        "to": Identity(kind="email", value="li@example.cn"),
        "subject": "我们已收到您的邮件 We received your mail: 退货申请", "text": "谢谢 Thanks",
        "thread": Thread(in_reply_to="<c1@example.cn>", references=["<root@example.cn>"])}
    fields.update(changes)
    return OutboundMessage(**fields)


async def test_an_acknowledgement_carries_thread_tag_and_loop_headers(
        runner: SenderRunner, sink: Sink) -> None:
    message = outbound()
    await runner.handle(message)
    [mail] = sink.mails
    assert mail["From"] == ACCOUNT and mail["To"] == "li@example.cn"
    assert mail["Subject"] == "[#1042] 我们已收到您的邮件 We received your mail: 退货申请"
    assert mail["Message-ID"] == f"<1042.{message.id}@shop.example>"
    assert mail["In-Reply-To"] == "<c1@example.cn>"
    assert mail["References"] == "<root@example.cn> <c1@example.cn>"
    assert mail["Auto-Submitted"] == "auto-replied"
    assert mail["X-Auto-Response-Suppress"] == "All"
    assert mail["X-Loop"] == ACCOUNT
    assert mail.get_content().strip() == "谢谢 Thanks"
    [(_, result)] = runner.bus.results
    assert (result.status, result.provider_message_id) == ("sent", mail["Message-ID"])


async def test_an_agent_reply_is_not_marked_automatic_and_keeps_an_existing_tag(
        runner: SenderRunner, sink: Sink) -> None:
    await runner.handle(outbound(kind="reply", subject="Re: [#1042] 退货申请"))
    [mail] = sink.mails
    assert mail["Subject"] == "Re: [#1042] 退货申请"
    assert mail["Auto-Submitted"] is None and mail["X-Loop"] == ACCOUNT


async def test_a_subject_with_crlf_adds_no_header_and_no_recipient(
        runner: SenderRunner, sink: Sink) -> None:
    await runner.handle(outbound(kind="reply", subject="hi\r\nBcc: x@evil.example"))
    [mail] = sink.mails
    assert mail["Bcc"] is None and mail["Subject"] == "[#1042] hi Bcc: x@evil.example"
    assert sink.envelopes == [(ACCOUNT, ["li@example.cn"])]


async def test_a_recipient_with_crlf_is_failed_and_nothing_is_sent(
        runner: SenderRunner, sink: Sink) -> None:
    await runner.handle(outbound(kind="reply", to=Identity(
        kind="email", value="li@example.cn\r\nBcc: y@evil.example")))
    assert results(runner) == [("failed", "address_invalid")]
    assert sink.mails == []


async def test_a_5xx_is_failed_with_the_relays_answer(runner: SenderRunner, sink: Sink) -> None:
    sink.answers.append("550 5.7.1 policy says no")
    await runner.handle(outbound(kind="reply"))
    [(status, reason)] = results(runner)
    assert (status, reason) == ("failed", "relay_rejected")
    assert sink.mails == []


async def test_no_relay_listening_is_retried_not_failed(tmp_path: Path) -> None:
    sink = await Sink().start()
    port = sink.port
    await sink.stop()  # nothing listens there now
    runner = await open_runner(tmp_path, port)
    try:
        await runner.handle(outbound(kind="reply"))
        assert results(runner) == []
        assert await runner.retries.depth() == 1
        sink = await Sink().start(port)
        assert await runner.retry_due(due_by=time.time() + 86400) == 1
        assert [s for s, _ in results(runner)] == ["sent"] and len(sink.mails) == 1
    finally:
        await runner.close()
        await sink.stop()


@pytest.mark.parametrize(("to", "reason"), [
    ("noreply@vendor.example", "no_auto_reply_to"),
    ("MAILER-DAEMON@mx.example", "no_auto_reply_to"),
    ("support@shop.example", "own_address"),
    ("help@shop.example", "own_address"),
])
async def test_automatic_mail_to_such_addresses_is_suppressed(
        runner: SenderRunner, sink: Sink, to: str, reason: str) -> None:
    await runner.handle(outbound(to=Identity(kind="email", value=to)))
    assert results(runner) == [("suppressed", reason)]
    assert sink.mails == []


async def test_automatic_mail_to_a_bounced_address_is_suppressed_but_a_reply_goes(
        runner: SenderRunner, sink: Sink) -> None:
    await EmailState(runner.state).note_bounced(["gone@example.com"])
    to = Identity(kind="email", value="gone@example.com")
    await runner.handle(outbound(to=to))
    await runner.handle(outbound(to=to, kind="reply"))
    assert results(runner) == [("suppressed", "bounced"), ("sent", None)]
    assert len(sink.mails) == 1


async def test_automatic_mail_over_the_hourly_cap_is_suppressed_replies_are_not(
        runner: SenderRunner, sink: Sink) -> None:
    for _ in range(6):
        await runner.handle(outbound())
    await runner.handle(outbound(kind="reply"))
    assert [s for s, _ in results(runner)] == ["sent"] * 5 + ["suppressed", "sent"]
    assert results(runner)[5] == ("suppressed", "cap")
    assert len(sink.mails) == 6


async def test_a_bounce_hold_ends_after_60_days(tmp_path: Path) -> None:
    async with StateStore(f"sqlite+aiosqlite:///{tmp_path / 's.sqlite3'}") as store:
        state = EmailState(store)
        await state.note_bounced(["Gone@Example.com"], now=0.0)
        assert await state.bounced_recently("gone@example.com", now=59 * 86400.0)
        assert not await state.bounced_recently("gone@example.com", now=61 * 86400.0)


async def test_a_dead_lettered_reply_delivered_twice_at_once_is_sent_once(
        runner: SenderRunner, sink: Sink) -> None:
    sink.answers.append("550 5.1.1 no such user")
    message = outbound(kind="reply")
    await runner.handle(message)
    assert isinstance(runner.bus, MemoryBus)
    [(_, reason, error, exchange, key, body)] = runner.bus.dead
    assert (reason, error, exchange, key) == (
        "relay_rejected", "550 5.1.1 no such user", "outbound", f"email.{ACCOUNT}")
    assert OutboundMessage.model_validate_json(body) == message
    # Two deliveries of the replayed letter racing (two replicas): one send between them.
    await asyncio.gather(runner.handle(message), runner.handle(message))
    assert len(sink.mails) == 1
    assert results(runner)[0] == ("failed", "relay_rejected")
    assert "sent" in [s for s, _ in results(runner)[1:]]
