"""The SMTP listener over a real socket, driven by the standard library's smtplib."""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosmtplib
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
        slow = MAIL.replace(b"hello", b"hello\r\n" * 200_000)  # surely over 1 ms to parse
        await listener.client(lambda c: c.sendmail("li@example.cn", ["support@shop.example"],
                                                   slow))
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


async def test_undeclared_data_over_the_limit_is_read_to_the_end_and_answered_552() -> None:
    listener = await listening(RecordingPublisher(), parse_workers=0, max_message_bytes=4096)
    try:
        def send(client: smtplib.SMTP) -> tuple[int, bytes]:
            client.ehlo()
            client.mail("li@example.cn")
            client.rcpt("support@shop.example")
            code, text = client.data(MAIL.replace(b"hello", b"x" * 10_000))
            client.noop()  # the session goes on: the data was read to its end
            return code, text
        code, _ = await listener.client(send)
        assert code == 552
        assert listener.published == []
    finally:
        listener.server.close()
        await listener.server.wait_closed()


async def test_a_unicode_envelope_is_accepted_with_smtputf8(smtp: Listener) -> None:
    raw = MAIL.replace(b"From: Li <li@example.cn>", "From: 李 <李雷@例子.中国>".encode())

    def send(client: smtplib.SMTP) -> dict[str, Any]:
        return client.sendmail("李雷@例子.中国", ["support@shop.example"], raw,
                               mail_options=["SMTPUTF8"])
    assert await smtp.client(send) == {}
    [message] = smtp.published
    assert message.sender.identities[0].value == "李雷@例子.中国"
    assert message.channel_data["envelope"]["from"] == "李雷@例子.中国"


async def test_starttls_with_a_certificate_made_now(tmp_path: Path) -> None:
    import shutil
    import ssl
    import subprocess
    if shutil.which("openssl") is None:
        pytest.skip("needs openssl to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    command = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
               "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)]
    await asyncio.to_thread(subprocess.run, command, check=True, capture_output=True)
    listener = await listening(RecordingPublisher(), parse_workers=0, tls_cert=str(cert),
                               tls_key=str(key), require_tls=True)
    try:
        def send(client: smtplib.SMTP) -> tuple[int, int]:
            client.ehlo()
            before = client.mail("li@example.cn")[0]  # refused before STARTTLS
            client.rset()
            context = ssl.create_default_context(cafile=str(cert))
            context.check_hostname = False
            client.starttls(context=context)
            client.ehlo()
            client.sendmail("li@example.cn", ["support@shop.example"], MAIL)
            return before, 250
        before, _ = await listener.client(send)
        assert before == 530
        [message] = listener.published
        assert message.channel_data["envelope"]["tls"] is True
    finally:
        listener.server.close()
        await listener.server.wait_closed()


async def test_fifty_sessions_at_once_while_one_sends_a_mime_bomb() -> None:
    listener = await listening(RecordingPublisher(), parse_workers=2, parse_timeout_s=5.0,
                               max_sessions_per_client=100)
    try:
        depth = 5000
        bomb = (b"From: bomb@example.cn\r\nSubject: bomb\r\nMessage-ID: <bomb@example.cn>\r\n"
                + b"".join(b"Content-Type: multipart/mixed; boundary=\"b%d\"\r\n\r\n--b%d\r\n"
                           % (i, i) for i in range(depth)) + b"\r\nend\r\n")
        loop = asyncio.get_running_loop()
        times: list[float] = []

        async def one(i: int) -> None:
            started = loop.time()
            raw = MAIL.replace(b"<t1@example.cn>", b"<t%d@example.cn>" % i)
            await aiosmtplib.send(raw, sender="li@example.cn", recipients=[
                "support@shop.example"], hostname="127.0.0.1", port=listener.port)
            times.append(loop.time() - started)

        # aiosmtplib: 51 sessions really at once (smtplib would queue on the thread pool).
        bomb_task = asyncio.ensure_future(aiosmtplib.send(
            bomb, sender="bomb@example.cn", recipients=["support@shop.example"],
            hostname="127.0.0.1", port=listener.port, timeout=60))
        await asyncio.sleep(0.2)  # the bomb is being parsed while the others arrive
        await asyncio.gather(*(one(i) for i in range(50)))
        await bomb_task
        assert len(listener.published) == 51
        bombed = next(m for m in listener.published if m.subject == "bomb")
        assert bombed.flags == ["parse_error"]
        # The bomb's timeout ended the pool under the others: they were parsed again, not
        # answered 451 or stored unread.
        assert [m.flags for m in listener.published if m is not bombed] == [[]] * 50
        assert max(times) < 10.0, max(times)
    finally:
        listener.server.close()
        await listener.server.wait_closed()
        listener.deliverer.pool.close()


async def test_sessions_over_the_per_client_limit_get_421() -> None:
    listener = await listening(RecordingPublisher(), parse_workers=0, max_sessions_per_client=2)
    try:
        open_clients = [aiosmtplib.SMTP(hostname="127.0.0.1", port=listener.port)
                        for _ in range(2)]
        for client in open_clients:
            await client.connect()
        third = aiosmtplib.SMTP(hostname="127.0.0.1", port=listener.port)
        with pytest.raises(aiosmtplib.SMTPConnectResponseError) as refused:
            await third.connect()
        assert refused.value.code == 421
        for client in open_clients:
            await client.quit()
    finally:
        listener.server.close()
        await listener.server.wait_closed()
