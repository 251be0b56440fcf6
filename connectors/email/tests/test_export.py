"""`intake email export`: a mail taken over SMTP comes back as `.eml` with `Return-Path:` and
`Received:` from its envelope (RFC 5321 4.4), the raw below them byte for byte."""

from __future__ import annotations

import asyncio
import email
import email.utils
import os
import smtplib
import sys
from datetime import UTC, datetime
from email import policy
from pathlib import Path

from connectors.email.inbound import Deliverer, ParserPool
from connectors.email.inbound.export import exported_raw, trace_headers
from connectors.email.inbound.smtp import start_server
from connectors.email.settings import EmailSettings
from intake import IntakeSettings, blob_store_for
from intake.testing import RecordingPublisher

from .test_smtp import MAIL, accounts

REPO = Path(__file__).resolve().parents[3]
AT = datetime(2026, 12, 1, 2, 3, 4, tzinfo=UTC)


def test_an_smtp_envelope_gives_return_path_and_received() -> None:
    envelope = {"from": "li@example.cn", "to": ["support+t7@shop.example"],
                "client": "203.0.113.9", "helo": "mx.example.cn", "tls": True}
    assert trace_headers(envelope, AT) == [
        "Return-Path: <li@example.cn>",
        "Received: from mx.example.cn ([203.0.113.9])\n\tby intake.local with ESMTPS\n"
        "\tfor <support+t7@shop.example>;\n\tTue, 01 Dec 2026 02:03:04 +0000"]


def test_a_null_sender_stays_visible_and_several_recipients_are_not_named() -> None:
    envelope = {"from": "", "to": ["a@shop.example", "b@shop.example"], "client": "127.0.0.1",
                "helo": "x", "tls": False}
    lines = trace_headers(envelope, AT)
    assert lines[0] == "Return-Path: <>"
    assert lines[1] == ("Received: from x ([127.0.0.1])\n\tby intake.local with ESMTP;\n"
                        "\tTue, 01 Dec 2026 02:03:04 +0000")


def test_a_unicode_envelope_is_utf8smtp_and_a_hostile_helo_adds_no_header() -> None:
    envelope = {"from": "李@例子.中国", "to": ["support@shop.example"], "client": "127.0.0.1",
                "helo": "evil\rX-Injected: 1", "tls": False}
    raw = b"Subject: x\r\n\r\nhi\r\n"
    out = exported_raw(raw, envelope, AT)
    parsed = email.message_from_bytes(out, policy=policy.default)
    assert parsed["Return-Path"] == "<李@例子.中国>"
    assert "with UTF8SMTP" in str(parsed["Received"])
    assert parsed["X-Injected"] is None and "evilX-Injected:1" in str(parsed["Received"])
    assert out.endswith(b"\r\n" + raw)


def test_a_mail_without_an_smtp_envelope_is_exported_unchanged() -> None:
    raw = b"Return-Path: <a@b.example>\r\nSubject: imported\r\n\r\nbody\r\n"
    assert exported_raw(raw, {"from": None, "to": ["support@shop.example"]}, AT) == raw
    assert exported_raw(raw, None, AT) == raw


def test_a_bare_lf_mail_gets_bare_lf_trace_lines() -> None:
    raw = b"Subject: lf\n\nbody\n"
    out = exported_raw(raw, {"from": "li@example.cn", "to": [], "helo": "h"}, AT)
    assert b"\r" not in out and out.endswith(b"\n" + raw)


async def test_a_mail_taken_over_smtp_is_exported_by_the_command(tmp_path: Path) -> None:
    settings = IntakeSettings(data_dir=tmp_path)
    own = EmailSettings(parse_workers=0)
    blobs = blob_store_for(settings)
    deliverer = Deliverer(RecordingPublisher(), blobs, accounts(), own,
                          ParserPool(own.parse_workers, own.parse_timeout_s))
    server = await start_server(deliverer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]

    def send() -> None:
        with smtplib.SMTP("127.0.0.1", port, local_hostname="client.example.cn") as client:
            client.sendmail("li@example.cn", ["Support@shop.example"], MAIL)

    try:
        await asyncio.to_thread(send)
    finally:
        server.close()
        await server.wait_closed()
        deliverer.pool.close()
    [message] = deliverer.publisher.messages
    source = tmp_path / "message.json"
    source.write_text(message.model_dump_json())
    out = tmp_path / "out.eml"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "intake.cli", "email", "export", str(source), "-o", str(out),
        cwd=REPO, env=dict(os.environ, INTAKE_DATA_DIR=str(tmp_path)),
        stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    exported = out.read_bytes()
    parsed = email.message_from_bytes(exported, policy=policy.default)
    assert parsed["Return-Path"] == "<li@example.cn>"
    received = " ".join(str(parsed["Received"]).split())
    assert received.startswith(
        "from client.example.cn ([127.0.0.1]) by intake.local with ESMTP "
        "for <Support@shop.example>;")
    when = email.utils.parsedate_to_datetime(received.rpartition(";")[2].strip())
    assert when == message.received_at.replace(microsecond=0)
    assert exported.endswith(b"\r\n" + MAIL)  # the raw as received, below the trace lines
    assert parsed["Subject"] == "退货申请"
    await blobs.close()
