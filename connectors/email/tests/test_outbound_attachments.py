"""Attachments on outgoing mail: the blobs an agent attached go out as MIME parts to a real SMTP
receiver (an aiosmtpd sink over a socket), and read back through our own parser unchanged."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from connectors.email.inbound import policy_for
from connectors.email.normalize import Envelope, to_message
from connectors.email.outbound import EmailSender
from connectors.email.settings import EmailAccounts
from intake import Attachment, FileBlobStore, SenderRunner
from intake.testing import MemoryBus

from .sink import Sink
from .test_outbound import ACCOUNT, open_runner, outbound

PDF = b"%PDF-1.4\n" + bytes(range(256)) * 400 + b"\n%%EOF\n"  # binary, ~100 kB
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\xff" * 64


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    started = await Sink().start()
    yield started
    await started.stop()


@pytest.fixture
async def blobs(tmp_path: Path) -> AsyncIterator[FileBlobStore]:
    store = FileBlobStore(tmp_path / "blobs")
    yield store
    await store.close()


@pytest.fixture
async def runner(sink: Sink, tmp_path: Path, blobs: FileBlobStore,
                 ) -> AsyncIterator[SenderRunner]:
    started = await open_runner(tmp_path, sink.port)
    sender = started.sender
    assert isinstance(sender, EmailSender)
    sender.blobs = blobs
    yield started
    sender.blobs = None  # the blobs fixture closes the store
    await started.close()


async def stored(blobs: FileBlobStore, data: bytes, filename: str, content_type: str,
                 **extra: Any) -> Attachment:
    ref = await blobs.put(data)
    return Attachment(filename=filename, content_type=content_type, size=len(data),
                      sha256=hashlib.sha256(data).hexdigest(), blob=ref, **extra)


def results(runner: SenderRunner) -> list[tuple[str, str | None]]:
    assert isinstance(runner.bus, MemoryBus)
    return [(r.status, r.reason) for _, r in runner.bus.results]


async def test_a_reply_carries_its_attachments_byte_for_byte(
        runner: SenderRunner, sink: Sink, blobs: FileBlobStore) -> None:
    files = [await stored(blobs, PDF, "退货单 8812.pdf", "application/pdf"),
             await stored(blobs, b"", "empty.txt", "text/plain")]
    await runner.handle(outbound(kind="reply", attachments=files))
    assert results(runner) == [("sent", None)]
    [mail] = sink.mails
    parts = list(mail.iter_attachments())
    assert [p.get_filename() for p in parts] == ["退货单 8812.pdf", "empty.txt"]
    assert [p.get_content_type() for p in parts] == ["application/pdf", "text/plain"]
    assert parts[0].get_payload(decode=True) == PDF
    assert parts[1].get_payload(decode=True) == b""
    assert mail.get_body(("plain",)).get_content().strip() == "谢谢 Thanks"  # type: ignore[union-attr]


async def test_attachments_read_back_through_our_parser_with_the_same_sha256(
        runner: SenderRunner, sink: Sink, blobs: FileBlobStore) -> None:
    files = [await stored(blobs, PDF, "退货单 8812.pdf", "application/pdf"),
             await stored(blobs, PNG, "photo.png", "image/png")]
    await runner.handle(outbound(kind="reply", attachments=files))
    [raw] = sink.raws
    accounts = runner.accounts
    assert isinstance(accounts, EmailAccounts)
    account = accounts.find(ACCOUNT)
    assert account is not None
    parsed = to_message(raw, Envelope(mail_from=ACCOUNT, rcpt_to=("li@example.cn",)),
                        policy_for(account, accounts), datetime.now(UTC))
    got = [(a.filename, a.sha256, a.size) for a in parsed.message.attachments]
    assert got == [(f.filename, f.sha256, f.size) for f in files]
    assert parsed.blobs == [PDF, PNG]


async def test_an_inline_image_sits_beside_the_html_with_its_content_id(
        runner: SenderRunner, sink: Sink, blobs: FileBlobStore) -> None:
    image = await stored(blobs, PNG, "logo.png", "image/png", content_id="<logo@shop>",
                         inline=True)
    await runner.handle(outbound(kind="reply", html='<p>hi <img src="cid:logo@shop"></p>',
                                 attachments=[image]))
    [mail] = sink.mails
    related = next(p for p in mail.walk() if p.get_content_type() == "multipart/related")
    html, logo = list(related.iter_parts())
    assert html.get_content_type() == "text/html"
    assert logo["Content-ID"] == "<logo@shop>"
    assert logo.get_content_disposition() == "inline"
    assert logo.get_payload(decode=True) == PNG


async def test_a_file_name_with_crlf_adds_no_header(
        runner: SenderRunner, sink: Sink, blobs: FileBlobStore) -> None:
    evil = await stored(blobs, b"x", "a.txt\r\nBcc: x@evil.example\r\n", "text/plain\r\nX: y")
    await runner.handle(outbound(kind="reply", attachments=[evil]))
    [mail] = sink.mails
    [part] = list(mail.iter_attachments())
    assert mail["Bcc"] is None and part["Bcc"] is None and part["X"] is None
    assert "\n" not in (part.get_filename() or "\n")
    assert part.get_content_type() == "application/octet-stream"
    assert sink.envelopes == [(ACCOUNT, ["li@example.cn"])]


async def test_a_missing_blob_fails_the_reply_and_sends_nothing(
        runner: SenderRunner, sink: Sink, blobs: FileBlobStore) -> None:
    gone = Attachment(filename="gone.pdf", size=3, sha256="0" * 64, blob="sha256:" + "0" * 64)
    await runner.handle(outbound(kind="reply", attachments=[gone]))
    assert results(runner) == [("failed", "attachment_missing")]
    assert sink.mails == []


async def test_a_blob_that_differs_from_its_sha256_fails(
        runner: SenderRunner, sink: Sink, blobs: FileBlobStore) -> None:
    real = await stored(blobs, PDF, "a.pdf", "application/pdf")
    await runner.handle(outbound(kind="reply", attachments=[
        real.model_copy(update={"sha256": hashlib.sha256(b"other").hexdigest()})]))
    assert results(runner) == [("failed", "attachment_missing")]
    assert sink.mails == []


async def test_a_reply_larger_than_the_relay_takes_fails_before_mail_from(
        tmp_path: Path, blobs: FileBlobStore) -> None:
    small_relay = await Sink(size_limit=64 * 1024).start()  # EHLO says SIZE 65536
    started = await open_runner(tmp_path, small_relay.port)
    sender = started.sender
    assert isinstance(sender, EmailSender)
    sender.blobs = blobs
    try:
        big = await stored(blobs, PDF, "scan.pdf", "application/pdf")  # ~100 kB, base64 more
        await started.handle(outbound(kind="reply", attachments=[big]))
        [result] = [r for _, r in started.bus.results]  # type: ignore[attr-defined]
        assert (result.status, result.reason) == ("failed", "too_large_for_relay")
        assert small_relay.commands == []  # neither MAIL nor DATA: nothing was uploaded
        small = await stored(blobs, PNG, "photo.png", "image/png")
        await started.handle(outbound(kind="reply", attachments=[small]))
        assert [(r.status, r.reason) for _, r in started.bus.results][1] == ("sent", None)  # type: ignore[attr-defined]
        assert [c.split(" ", 1)[0] for c in small_relay.commands] == ["MAIL", "DATA"]
        assert len(small_relay.mails) == 1
    finally:
        sender.blobs = None
        await started.close()
        await small_relay.stop()


async def test_a_relay_without_a_size_limit_gets_the_mail(
        tmp_path: Path, blobs: FileBlobStore) -> None:
    unlimited = await Sink(size_limit=0).start()  # aiosmtpd then advertises no SIZE value
    started = await open_runner(tmp_path, unlimited.port)
    sender = started.sender
    assert isinstance(sender, EmailSender)
    sender.blobs = blobs
    try:
        big = await stored(blobs, PDF, "scan.pdf", "application/pdf")
        await started.handle(outbound(kind="reply", attachments=[big]))
        assert [(r.status, r.reason) for _, r in started.bus.results] == [("sent", None)]  # type: ignore[attr-defined]
        assert unlimited.mails[0].get_payload()[1].get_payload(decode=True) == PDF
    finally:
        sender.blobs = None
        await started.close()
        await unlimited.stop()
