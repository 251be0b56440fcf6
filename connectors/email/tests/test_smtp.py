"""The SMTP listener over a real socket, driven by the standard library's smtplib."""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from connectors.email import CHANNEL
from connectors.email.inbound import Deliverer, ParserPool
from connectors.email.inbound.smtp import start_server
from connectors.email.settings import EmailAccounts, EmailSettings
from intake import load_document
from intake.testing import MemoryBlobStore, RecordingPublisher, RefusingPublisher

EXAMPLE = Path(__file__).resolve().parent.parent / "example.yaml"
MAIL = (b"From: Li <li@example.cn>\r\nTo: support@shop.example\r\n"
        b"Subject: =?UTF-8?B?6YCA6LSn55Sz6K+3?=\r\nMessage-ID: <t1@example.cn>\r\n"
        b"Date: Tue, 01 Dec 2026 10:00:00 +0800\r\n\r\nhello\r\n")


def accounts() -> EmailAccounts:
    loaded = CHANNEL.load_accounts(load_document(EXAMPLE))
    assert isinstance(loaded, EmailAccounts)
    return loaded


class Listener:
    def __init__(self, deliverer: Deliverer, server: asyncio.Server) -> None:
        self.deliverer = deliverer
        self.server = server
        self.port = server.sockets[0].getsockname()[1]

    @property
    def published(self) -> list[Any]:
        return list(self.deliverer.publisher.messages)

    async def client(self, work: Any) -> Any:
        def run() -> Any:
            with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as client:
                return work(client)
        return await asyncio.to_thread(run)


async def listening(publisher: Any, **settings: Any) -> Listener:
    own = EmailSettings(**settings)
    deliverer = Deliverer(publisher, MemoryBlobStore(), accounts(), own,
                          ParserPool(own.parse_workers, own.parse_timeout_s))
    server = await start_server(deliverer, "127.0.0.1", 0)
    return Listener(deliverer, server)


@pytest.fixture
async def smtp() -> AsyncIterator[Listener]:
    listener = await listening(RecordingPublisher(), parse_workers=0)
    yield listener
    listener.server.close()
    await listener.server.wait_closed()
    listener.deliverer.pool.close()


async def test_a_mail_is_answered_250_once_published(smtp: Listener) -> None:
    answer = await smtp.client(lambda c: c.sendmail("li@example.cn", ["support@shop.example"],
                                                    MAIL))
    assert answer == {}
    [message] = smtp.published
    assert (message.account, message.subject, message.text) == (
        "support@shop.example", "退货申请", "hello")
    assert message.sender.identities[0].value == "li@example.cn"
    assert message.channel_data["envelope"]["from"] == "li@example.cn"
    assert await smtp.deliverer.blobs.exists(message.raw)


async def test_ehlo_advertises_size_8bitmime_smtputf8_and_enhanced_codes(smtp: Listener) -> None:
    def ehlo(client: smtplib.SMTP) -> dict[str, str]:
        client.ehlo()
        return dict(client.esmtp_features)
    features = await smtp.client(ehlo)
    assert features["size"] == "52428800"
    assert {"8bitmime", "smtputf8", "enhancedstatuscodes"} <= set(features)


async def test_unknown_mailbox_and_foreign_domain_are_refused_at_rcpt(smtp: Listener) -> None:
    def rcpt(client: smtplib.SMTP) -> list[tuple[int, bytes]]:
        client.ehlo()
        client.mail("li@example.cn")
        return [client.rcpt("nobody@shop.example"), client.rcpt("x@elsewhere.example")]
    (code1, text1), (code2, text2) = await smtp.client(rcpt)
    assert (code1, code2) == (550, 550)
    assert text1.startswith(b"5.1.1 <nobody@shop.example>: no such mailbox here")
    assert text2 == b"5.7.1 relaying denied"
    assert smtp.published == []


async def test_plus_address_in_any_case_reaches_the_account_with_its_detail(
        smtp: Listener) -> None:
    await smtp.client(lambda c: c.sendmail("li@example.cn", ["Support+T1042@SHOP.example"], MAIL))
    [message] = smtp.published
    assert message.account == "support@shop.example"
    assert message.channel_data["plus_detail"] == "T1042"
    assert message.thread.ticket_number == "1042"


async def test_the_101st_recipient_gets_452(smtp: Listener) -> None:
    def many(client: smtplib.SMTP) -> list[int]:
        client.ehlo()
        client.mail("li@example.cn")
        return [client.rcpt("support@shop.example")[0] for _ in range(101)]
    codes = await smtp.client(many)
    assert codes[:100] == [250] * 100 and codes[100] == 452


async def test_declared_size_over_the_limit_gets_552(smtp: Listener) -> None:
    def big(client: smtplib.SMTP) -> tuple[int, bytes]:
        client.ehlo()
        return client.mail("li@example.cn", ["SIZE=60000000"])
    code, _ = await smtp.client(big)
    assert code == 552


async def test_a_60_kb_line_is_accepted_and_kept(smtp: Listener) -> None:
    line = b"x" * 60_000
    raw = MAIL.replace(b"hello", line)
    await smtp.client(lambda c: c.sendmail("li@example.cn", ["support@shop.example"], raw))
    [message] = smtp.published
    assert message.text == line.decode()
    assert await smtp.deliverer.blobs.get(message.raw) == raw


async def test_two_of_our_mailboxes_give_one_message_each(smtp: Listener) -> None:
    await smtp.client(lambda c: c.sendmail(
        "li@example.cn", ["support@shop.example", "help@shop.example"], MAIL))
    # help@ is an alias of support@: one account, one message.
    assert [m.account for m in smtp.published] == ["support@shop.example"]


async def test_451_when_neither_broker_nor_outbox_takes_it() -> None:
    listener = await listening(RefusingPublisher(), parse_workers=0)
    try:
        def send(client: smtplib.SMTP) -> tuple[int, bytes]:
            client.ehlo()
            client.mail("li@example.cn")
            client.rcpt("support@shop.example")
            return client.data(MAIL)
        code, text = await listener.client(send)
        assert code == 451 and text.startswith(b"4.3.0"), text
    finally:
        listener.server.close()
        await listener.server.wait_closed()


async def test_a_parse_over_its_time_becomes_a_parse_error_message_and_the_pool_recovers(
        ) -> None:
    listener = await listening(RecordingPublisher(), parse_workers=1, parse_timeout_s=0.001)
    try:
        await listener.client(lambda c: c.sendmail("li@example.cn", ["support@shop.example"],
                                                   MAIL))
        [message] = listener.published
        assert message.flags == ["parse_error"]
        assert message.channel_data["parse_error"] == "timeout"
        assert message.subject == "退货申请"  # the readable headers are kept
        listener.deliverer.pool.timeout_s = 60.0
        await listener.client(lambda c: c.sendmail("li@example.cn", ["support@shop.example"],
                                                   MAIL.replace(b"hello", b"again")))
        assert listener.published[-1].text == "again"
        assert listener.published[-1].flags == []
    finally:
        listener.server.close()
        await listener.server.wait_closed()
        listener.deliverer.pool.close()


async def test_mime_nested_too_deep_is_a_parse_error_not_a_crash(smtp: Listener) -> None:
    depth = 300
    head = b"".join(b"Content-Type: multipart/mixed; boundary=\"b%d\"\r\n\r\n--b%d\r\n" % (i, i)
                    for i in range(depth))
    raw = (b"From: li@example.cn\r\nSubject: deep\r\nMessage-ID: <deep@example.cn>\r\n"
           + head + b"Content-Type: text/plain\r\n\r\nbottom\r\n")
    await smtp.client(lambda c: c.sendmail("li@example.cn", ["support@shop.example"], raw))
    [message] = smtp.published
    assert message.flags == ["parse_error"] and message.channel_data["parse_error"] == "too_deep"
    assert message.subject == "deep"
