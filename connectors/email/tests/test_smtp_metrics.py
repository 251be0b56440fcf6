"""The SMTP listener's metrics over a real socket, and session counting across STARTTLS."""

from __future__ import annotations

import asyncio
import shutil
import smtplib
import ssl
import subprocess
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from intake.testing import RecordingPublisher

from .test_smtp import MAIL, Listener, listening


def replies(command: str, code: str) -> float:
    return REGISTRY.get_sample_value("intake_email_smtp_replies_total", {
        "service": "email", "command": command, "code": code}) or 0.0


def sessions_open() -> float:
    return REGISTRY.get_sample_value("intake_email_smtp_sessions_open", {"service": "email"}) or 0.0


async def closed(listener: Listener) -> None:
    listener.server.close()
    await listener.server.wait_closed()
    listener.deliverer.pool.close()


async def test_replies_are_counted_by_command_and_code() -> None:
    listener = await listening(RecordingPublisher(), parse_workers=0)
    before = {k: replies(*k) for k in [("CONNECT", "220"), ("RCPT", "550"), ("RCPT", "250"),
                                       ("DATA", "250"), ("MAIL", "552"), ("EHLO", "250")]}
    try:
        def session(client: smtplib.SMTP) -> None:
            client.ehlo()
            assert client.mail("li@example.cn", ["SIZE=999999999999"])[0] == 552
            client.rset()
            client.mail("li@example.cn")
            assert client.rcpt("nobody@shop.example")[0] == 550
            assert client.rcpt("support@shop.example")[0] == 250
            assert client.data(MAIL)[0] == 250
        await listener.client(session)
    finally:
        await closed(listener)
    grown = {k: replies(*k) - v for k, v in before.items()}
    assert grown == {("CONNECT", "220"): 1, ("RCPT", "550"): 1, ("RCPT", "250"): 1,
                     ("DATA", "250"): 1, ("MAIL", "552"): 1, ("EHLO", "250"): 1}


async def test_sessions_open_goes_up_and_back_down() -> None:
    listener = await listening(RecordingPublisher(), parse_workers=0)
    base = sessions_open()
    try:
        def session(client: smtplib.SMTP) -> float:
            client.noop()
            return sessions_open()
        assert await listener.client(session) == base + 1
        for _ in range(50):
            if sessions_open() == base:
                break
            await asyncio.sleep(0.02)
        assert sessions_open() == base
    finally:
        await closed(listener)


async def test_starttls_sessions_count_once_and_are_released(tmp_path: Path) -> None:
    """aiosmtpd calls `connection_made` again for the TLS transport: a session counted twice
    would refuse its own upgrade at a limit of one, and leak a slot per session otherwise."""
    if shutil.which("openssl") is None:
        pytest.skip("needs openssl to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    await asyncio.to_thread(subprocess.run, [
        "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
        "/CN=localhost", "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    listener = await listening(RecordingPublisher(), parse_workers=0, tls_cert=str(cert),
                               tls_key=str(key), max_sessions_per_client=1)
    try:
        def send(client: smtplib.SMTP) -> None:
            context = ssl.create_default_context(cafile=str(cert))
            context.check_hostname = False
            client.starttls(context=context)
            client.sendmail("li@example.cn", ["support@shop.example"], MAIL)
        for _ in range(3):
            await listener.client(send)
            await asyncio.sleep(0.05)  # the server's side of the close
        assert len(listener.published) == 3
    finally:
        await closed(listener)


async def test_a_40_mib_mail_with_a_30_mib_attachment_is_kept_whole() -> None:
    """The issue's big-mail case over a real socket: 30 MiB of binary is 40 MiB of base64."""
    import hashlib
    import os
    from email.message import EmailMessage

    data = os.urandom(30 * 1024 * 1024)
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = "li@example.cn", "support@shop.example", "big"
    mail["Message-ID"] = "<big@example.cn>"
    mail.set_content("the scan is attached")
    mail.add_attachment(data, maintype="application", subtype="pdf", filename="scan.pdf")
    raw = mail.as_bytes(policy=mail.policy.clone(linesep="\r\n"))  # SMTP's line ends
    assert len(raw) > 40 * 1024 * 1024
    listener = await listening(RecordingPublisher(), parse_workers=1, parse_timeout_s=120.0)
    try:
        answer = await listener.client(lambda c: c.sendmail(
            "li@example.cn", ["support@shop.example"], raw))
        assert answer == {}
        [message] = listener.published
        [attachment] = message.attachments
        assert (attachment.filename, attachment.size) == ("scan.pdf", len(data))
        assert attachment.sha256 == hashlib.sha256(data).hexdigest()
        assert await listener.deliverer.blobs.get(attachment.blob) == data
        assert message.text == "the scan is attached"
    finally:
        await closed(listener)


async def test_status_reads_the_running_services_counters() -> None:
    from aiohttp import web
    from aiohttp.test_utils import TestServer
    from prometheus_client import generate_latest

    from connectors.email.inbound.files import live_figures

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(REGISTRY), content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    listener = await listening(RecordingPublisher(), parse_workers=0)
    try:
        before = replies("RCPT", "550")
        await listener.client(lambda c: c.sendmail("li@example.cn", ["nobody@shop.example",
                                                                     "support@shop.example"],
                                                   MAIL))
        live = await asyncio.to_thread(live_figures, str(server.make_url("/metrics")))
        assert live["smtp_replies"]["code=550,command=RCPT"] == before + 1  # type: ignore[index]
        assert "all" in live["smtp_sessions_open"]  # type: ignore[operator]
        gone = await asyncio.to_thread(live_figures, "http://127.0.0.1:1/metrics")
        assert str(gone["service"]).startswith("not answering")
    finally:
        await closed(listener)
        await server.close()
