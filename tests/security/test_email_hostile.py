"""Hostile mail at the SMTP listener (real sockets) and hostile ticket data in outgoing mail.

Malformed MIME is read, never dropped or fatal; header and References bombs are bounded; HTML
is sanitised; attachment names are cleaned; a session that sends nothing or trickles its data is
cut; and nothing from ticket data adds a header or a recipient to a reply.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from connectors.email.outbound import build_mail
from connectors.email.tests.test_outbound import accounts_for, outbound
from connectors.email.tests.test_smtp import Listener, listening
from intake import Message, Thread
from intake.testing import RecordingPublisher

HEAD = (b"From: Li <li@example.cn>\r\nTo: support@shop.example\r\nSubject: hostile\r\n"
        b"Message-ID: <%s@example.cn>\r\nDate: Tue, 01 Dec 2026 10:00:00 +0800\r\n")
MALFORMED = {
    "boundary_never_comes": b"Content-Type: multipart/mixed; boundary=\"nope\"\r\n\r\n"
                            b"text before a boundary that never comes\r\n",
    "no_closing_boundary": b"Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\n"
                           b"Content-Type: text/plain\r\n\r\nopened, never closed\r\n",
    "boundary_empty": b"Content-Type: multipart/mixed; boundary=\"\"\r\n\r\n--\r\nx\r\n--\r\n",
    "no_boundary_param": b"Content-Type: multipart/mixed\r\n\r\nno boundary at all\r\n",
    "base64_garbage": b"Content-Type: text/plain; charset=utf-8\r\n"
                      b"Content-Transfer-Encoding: base64\r\n\r\n!!!*** not base64 ===\r\n",
    "unknown_transfer_encoding": b"Content-Type: text/plain\r\n"
                                 b"Content-Transfer-Encoding: x-rot13\r\n\r\nuryyb\r\n",
    "unknown_charset": b"Content-Type: text/plain; charset=x-klingon\r\n\r\nqapla\xff\xfe\r\n",
    "nul_and_8bit_in_7bit": b"Content-Type: text/plain\r\nContent-Transfer-Encoding: 7bit"
                            b"\r\n\r\na\x00b\xe4\xb8\xad\x00c\r\n",
    "header_without_colon": b"this line is no header\r\nContent-Type: text/plain\r\n\r\nbody\r\n",
    "content_type_garbage": b"Content-Type: ;;;===/;\r\n\r\nbody\r\n",
    "message_rfc822_truncated": b"Content-Type: message/rfc822\r\n\r\nFrom: x\r\nSubj\r\n",
    "encoded_word_garbage": b"X-Note: =?utf-8?B?@@@?= =?bogus?Q?=ZZ?=\r\n\r\nbody\r\n",
    "rfc2231_broken": b"Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\n"
                      b"Content-Type: application/pdf; name*0*=x-unknown''%ZZ; name*5=y\r\n"
                      b"Content-Disposition: attachment; filename*=''\r\n\r\nPDF\r\n--b--\r\n",
}
NO_HEADER_BREAK = re.compile(r"[\r\n\x00]")


@pytest.fixture
async def smtp() -> AsyncIterator[Listener]:
    listener = await listening(RecordingPublisher(), parse_workers=0)
    yield listener
    listener.server.close()
    await listener.server.wait_closed()
    listener.deliverer.pool.close()


async def send(listener: Listener, raw: bytes) -> Any:
    return await listener.client(lambda c: c.sendmail("li@example.cn", ["support@shop.example"],
                                                      raw))


@pytest.mark.parametrize("shape", list(MALFORMED), ids=list(MALFORMED))
async def test_malformed_mime_is_answered_250_and_becomes_a_valid_message(
        smtp: Listener, shape: str) -> None:
    raw = HEAD % shape.encode() + MALFORMED[shape]
    assert await send(smtp, raw) == {}
    [message] = smtp.published
    Message.model_validate_json(message.model_dump_json())  # what the bus carries
    assert message.subject == "hostile"
    assert "\x00" not in message.text
    assert await smtp.deliverer.blobs.get(message.raw) == raw  # the bytes as received


async def test_a_references_bomb_is_trimmed_to_the_first_and_the_99_newest(
        smtp: Listener) -> None:
    ids = [f"<r{i}@example.cn>" for i in range(20_000)]
    raw = (HEAD % b"refs").replace(b"Subject", b"References: " + " ".join(ids).encode()
                                   + b"\r\nSubject", 1) + b"\r\nbody\r\n"
    await send(smtp, raw)
    [message] = smtp.published
    assert message.thread is not None
    assert message.thread.references == [ids[0], *ids[-99:]]


async def test_a_header_bomb_is_read_and_bounded(smtp: Listener) -> None:
    many = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 50) for i in range(20_000))
    raw = HEAD % b"headers" + many + b"\r\nbody\r\n"
    started = time.monotonic()
    await send(smtp, raw)
    [message] = smtp.published
    assert message.text == "body" and time.monotonic() - started < 30


@pytest.mark.parametrize("markup", [
    '<script>alert(1)</script><p>hi</p>',
    '<img src="x" onerror="alert(1)"><p>hi</p>',
    '<a href="javascript:alert(1)">hi</a>',
    '<a href="JaVaScRiPt&#58;alert(1)">hi</a>',
    '<iframe src="https://evil.example"></iframe><p>hi</p>',
    '<svg onload="alert(1)"><p>hi</p></svg>',
    '<p style="background:url(javascript:alert(1))">hi</p>',
    '<form action="https://evil.example"><input name="pw"></form><p>hi</p>',
])
async def test_html_is_kept_sanitised(smtp: Listener, markup: str) -> None:
    raw = (HEAD % b"html" + b"Content-Type: text/html; charset=utf-8\r\n\r\n"
           + markup.encode() + b"\r\n")
    await send(smtp, raw)
    [message] = smtp.published
    kept = (message.html or "").lower()
    for dangerous in ("<script", "onerror", "onload", "javascript", "<iframe", "<form",
                      "<input", "alert(1)</"):
        assert dangerous not in kept, (dangerous, kept)
    assert "hi" in message.text
    assert "alert" not in message.text


@pytest.mark.parametrize("name", [
    "../../../../etc/passwd", "..\\..\\windows\\system32\\hosts", "/etc/shadow",
    "invoice.pdf\x00.exe", "invoice\u202efdp.exe", "..", "a\x1b[31mb.pdf", "é" * 300 + ".pdf",
])
async def test_hostile_attachment_names_are_cleaned_and_the_original_kept(
        smtp: Listener, name: str) -> None:
    from email.message import EmailMessage
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = "li@example.cn", "support@shop.example", "file"
    mail["Message-ID"] = "<file@example.cn>"
    mail.set_content("see attached")
    mail.add_attachment(b"%PDF-1.4", maintype="application", subtype="pdf",
                        filename=name.replace("\x00", "\\0"))
    raw = mail.as_bytes().replace(b"\\0", b"\x00")  # a NUL in the name as some mailers send
    await send(smtp, raw)
    [message] = smtp.published
    [attachment] = message.attachments
    cleaned = attachment.filename
    assert "/" not in cleaned and "\\" not in cleaned and cleaned not in (".", "..")
    assert not re.search("[\x00-\x1f\x7f\u202a-\u202e\u2066-\u2069]", cleaned)
    assert len(cleaned.encode()) <= 200
    assert await smtp.deliverer.blobs.get(attachment.blob) == b"%PDF-1.4"


async def test_a_client_that_never_sends_is_closed_after_the_idle_timeout() -> None:
    listener = await listening(RecordingPublisher(), parse_workers=0, idle_timeout_s=1.0)
    try:
        def silent() -> tuple[bytes, float]:
            started = time.monotonic()
            heard = b""
            with socket.create_connection(("127.0.0.1", listener.port), timeout=10) as sock:
                while chunk := sock.recv(1024):  # until the server closes
                    heard += chunk
            return heard, time.monotonic() - started
        heard, took = await asyncio.to_thread(silent)
        assert heard.startswith(b"220") and took < 5.0
        assert heard.endswith(b"421 4.4.2 intake.local idle timeout, closing connection\r\n")
    finally:
        listener.server.close()
        await listener.server.wait_closed()


async def test_data_trickled_slowly_is_cut_and_never_answered_250() -> None:
    listener = await listening(RecordingPublisher(), parse_workers=0, idle_timeout_s=1.0,
                               data_timeout_s=2.0)
    try:
        def trickle() -> tuple[bytes, float]:
            started = time.monotonic()
            heard = b""
            with socket.create_connection(("127.0.0.1", listener.port), timeout=10) as sock:
                sock.recv(1024)
                for line in (b"EHLO x\r\n", b"MAIL FROM:<li@example.cn>\r\n",
                             b"RCPT TO:<support@shop.example>\r\n", b"DATA\r\n"):
                    sock.sendall(line)
                    time.sleep(0.05)
                    heard += sock.recv(4096)
                try:
                    for _ in range(100):  # 20 s of one byte every 0.2 s, unless cut
                        sock.sendall(b"x")
                        time.sleep(0.2)
                except OSError:
                    pass
                sock.settimeout(2)
                try:
                    heard += sock.recv(4096)
                except OSError:
                    pass
            return heard, time.monotonic() - started
        heard, took = await asyncio.to_thread(trickle)
        assert b"354" in heard and b"250 2.0.0" not in heard
        assert b"421 4.4.2" in heard, heard  # cut by the DATA time limit, not left hanging
        assert took < 10.0
        assert listener.published == []
    finally:
        listener.server.close()
        await listener.server.wait_closed()


@pytest.mark.parametrize("field", ["subject", "in_reply_to", "references", "text"])
def test_ticket_data_with_crlf_adds_no_header_to_a_reply(field: str) -> None:
    evil = "x@example.cn>\r\nBcc: victim@evil.example\r\nX-Injected: 1\r\n\r\nbody"
    changes: dict[str, Any] = {"kind": "reply"}
    if field == "subject":
        changes["subject"] = evil
    elif field == "in_reply_to":
        changes["thread"] = Thread(in_reply_to=f"<{evil}")
    elif field == "references":
        changes["thread"] = Thread(references=["<ok@example.cn>", f"<{evil}"])
    else:
        changes["text"] = evil  # the body may hold anything; it is no header
    accounts = accounts_for(2526)
    account = accounts.find("support@shop.example")
    assert account is not None
    mail = build_mail(outbound(**changes), account, accounts)
    assert mail["Bcc"] is None and mail["X-Injected"] is None
    for name, value in mail.items():
        assert not NO_HEADER_BREAK.search(str(value).replace("\r\n ", "").replace("\n ", "")), (
            name, value)
    head = mail.as_bytes().split(b"\r\n\r\n", 1)[0]
    assert not re.search(rb"^(Bcc|X-Injected):", head, re.MULTILINE | re.IGNORECASE)


LOOPS = {  # id: (extra headers, MAIL FROM, body, the flags expected)
    "x_loop_ours": (b"X-Loop: support@shop.example\r\n", "li@example.cn", b"hi", ["loop"]),
    "our_message_id": (b"", "li@example.cn", b"hi", ["loop"]),  # Message-ID <N.x@shop.example>
    "auto_submitted": (b"Auto-Submitted: auto-generated\r\n", "li@example.cn", b"hi",
                       ["auto_reply"]),
    "auto_submitted_no": (b"Auto-Submitted: no\r\n", "li@example.cn", b"hi", []),
    "x_autoreply": (b"X-Autoreply: yes\r\n", "li@example.cn", b"hi", ["auto_reply"]),
    "precedence_auto_reply": (b"Precedence: auto_reply\r\n", "li@example.cn", b"hi",
                              ["auto_reply"]),
    "null_reverse_path": (b"", "", b"hi", ["auto_reply"]),
    "suppress_alone_is_a_person": (b"X-Auto-Response-Suppress: All\r\n", "li@example.cn",
                                   b"hi", []),
    "exchange_oof": (b"X-Auto-Response-Suppress: All\r\nX-MS-Exchange-Inbox-Rules-Loop: "
                     b"li@example.cn\r\n", "li@example.cn", b"hi", ["auto_reply"]),
    "person_mentions_auto_reply": (b"", "li@example.cn",
                                   "我收到了你们的自动回复，但问题还没解决".encode(), []),
    "list_mail": (b"List-Id: <news.example.cn>\r\n", "li@example.cn", b"hi", ["bulk"]),
}


@pytest.mark.parametrize("case", list(LOOPS), ids=list(LOOPS))
async def test_automatic_and_looping_mail_is_flagged_and_a_person_is_not(
        smtp: Listener, case: str) -> None:
    extra, mail_from, body, flags = LOOPS[case]
    message_id = b"1042.5f0c@shop.example" if case == "our_message_id" else case.encode()
    raw = (HEAD.replace(b"<%s@example.cn>", b"<%s>") % (
        message_id if case == "our_message_id" else message_id + b"@example.cn")
        + extra + b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + body + b"\r\n")
    await smtp.client(lambda c: c.sendmail(mail_from, ["support@shop.example"], raw))
    [message] = smtp.published
    assert message.flags == flags
