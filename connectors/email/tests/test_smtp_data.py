"""The DATA phase over real sockets: bare-LF mail over 1 MiB, lines and sizes over the limits,
and the DATA time limit that cuts a client trickling bytes without holding up other sessions."""

from __future__ import annotations

import asyncio
import smtplib
import socket
import time
from collections.abc import AsyncIterator

import pytest

from intake.testing import RecordingPublisher

from .test_smtp import MAIL, Listener, listening

MIB = 1024 * 1024


@pytest.fixture
async def smtp() -> AsyncIterator[Listener]:
    listener = await listening(RecordingPublisher(), parse_workers=0)
    yield listener
    await stop(listener)


async def stop(listener: Listener) -> None:
    listener.server.close()
    await listener.server.wait_closed()
    listener.deliverer.pool.close()


def raw_data(client: smtplib.SMTP, data: bytes) -> tuple[int, bytes]:
    """The envelope through smtplib, then `data` sent as it is (smtplib's own `data()` would
    turn every bare LF into CRLF), ended by `<CRLF>.<CRLF>`."""
    client.ehlo()
    client.mail("li@example.cn")
    client.rcpt("support@shop.example")
    client.putcmd("data")
    code, _ = client.getreply()
    assert code == 354
    client.send(data + b"\r\n.\r\n")
    return client.getreply()


def bare_lf_mail(size: int) -> bytes:
    head = (b"From: Li <li@example.cn>\nTo: support@shop.example\nSubject: bare LF\n"
            b"Message-ID: <lf@example.cn>\n\n")
    line = b"0123456789 " * 7 + b"\n"  # 78 bytes
    body = line * (size // len(line))
    # `<LF>.<LF>` and `<LF>.<CRLF>` are data, never the end (SMTP smuggling).
    return head + b"first\n.\nstill data\n.\r\nstill more\n" + body


async def test_a_2_mib_bare_lf_mail_is_taken_as_received(smtp: Listener) -> None:
    raw = bare_lf_mail(2 * MIB)
    started = time.monotonic()
    code, text = await smtp.client(lambda c: raw_data(c, raw))
    took = time.monotonic() - started
    assert (code, text[:5]) == (250, b"2.0.0"), text
    [message] = smtp.published
    assert message.subject == "bare LF" and message.sender.identities[0].value == "li@example.cn"
    assert message.text.startswith("first\n.\nstill data\n.\nstill more\n0123456789")
    # As received: the CRLF before the ending dot belongs to the data (RFC 5321 4.1.1.4).
    assert await smtp.deliverer.blobs.get(message.raw) == raw + b"\r\n"
    assert took < 20.0, took  # linear: aiosmtpd's CRLF reader refused it `500 Line too long`


async def test_a_line_over_1_mib_is_refused_500_and_the_session_goes_on(smtp: Listener) -> None:
    def two(client: smtplib.SMTP) -> tuple[tuple[int, bytes], tuple[int, bytes]]:
        first = raw_data(client, MAIL + b"x" * (MIB + 10))
        return first, raw_data(client, MAIL.rstrip(b"\r\n"))
    (code1, text1), (code2, _) = await smtp.client(two)
    assert (code1, text1[:5]) == (500, b"5.5.2")
    assert code2 == 250 and len(smtp.published) == 1


async def test_undeclared_data_over_the_limit_is_read_to_the_end_and_refused_552() -> None:
    listener = await listening(RecordingPublisher(), parse_workers=0, max_message_bytes=64_000)
    try:
        code, text = await listener.client(lambda c: raw_data(c, MAIL + b"y\n" * 40_000))
        assert (code, text[:5]) == (552, b"5.3.4")
        assert listener.published == []
    finally:
        await stop(listener)


def session_to_data(port: int) -> tuple[socket.socket, bytes]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    heard = sock.recv(1024)
    for line in (b"EHLO x\r\n", b"MAIL FROM:<li@example.cn>\r\n",
                 b"RCPT TO:<support@shop.example>\r\n", b"DATA\r\n"):
        sock.sendall(line)
        time.sleep(0.05)
        heard += sock.recv(4096)
    assert b"354" in heard, heard
    return sock, heard


def trickle(port: int, every_s: float, pieces: list[bytes]) -> tuple[bytes, float]:
    """Send `pieces` `every_s` apart after DATA (until cut); what the server said, how long."""
    sock, heard = session_to_data(port)
    started = time.monotonic()
    with sock:
        try:
            for n, piece in enumerate(pieces):
                time.sleep(every_s if n else 0)
                sock.sendall(piece)
        except OSError:
            pass
        sock.settimeout(5)
        try:
            while chunk := sock.recv(4096):
                heard += chunk
                if b"\r\n" in chunk:
                    break
        except OSError:
            pass
    return heard, time.monotonic() - started


async def test_a_trickling_client_is_cut_421_at_the_data_timeout_others_are_served() -> None:
    listener = await listening(RecordingPublisher(), parse_workers=0, idle_timeout_s=1.0,
                               data_timeout_s=4.0)
    try:
        slow = asyncio.create_task(asyncio.to_thread(
            trickle, listener.port, 0.2, [b"x"] * 100))  # 20 s of one byte every 0.2 s
        await asyncio.sleep(0.5)
        started = time.monotonic()
        answers = [await listener.client(lambda c: c.sendmail(
            "li@example.cn", ["support@shop.example"], MAIL)) for _ in range(3)]
        served_in = time.monotonic() - started
        heard, took = await slow
        assert answers == [{}, {}, {}] and served_in < 3.0, served_in
        assert b"421 4.4.2" in heard and b"DATA took longer than 4 s" in heard, heard
        assert 3.5 < took < 8.0, took
        assert b"250 2.0.0" not in heard and len(listener.published) == 3
    finally:
        await stop(listener)


async def test_silence_within_data_is_cut_421_at_the_idle_timeout() -> None:
    listener = await listening(RecordingPublisher(), parse_workers=0, idle_timeout_s=1.0,
                               data_timeout_s=30.0)
    try:
        heard, took = await asyncio.to_thread(trickle, listener.port, 10.0, [b"Subject: x\r\n"])
        assert b"421 4.4.2" in heard and b"idle timeout" in heard, heard
        assert took < 5.0 and listener.published == []
    finally:
        await stop(listener)


async def test_a_steady_transfer_longer_than_the_idle_timeout_is_taken() -> None:
    listener = await listening(RecordingPublisher(), parse_workers=0, idle_timeout_s=1.0,
                               data_timeout_s=30.0)
    try:
        lines = [MAIL.rstrip(b"\r\n")] + [b"\r\nmore %d" % i for i in range(8)] + [b"\r\n.\r\n"]
        heard, took = await asyncio.to_thread(trickle, listener.port, 0.4, lines)
        assert b"250 2.0.0" in heard, heard
        assert took > 3.0  # three times the idle timeout, never silent for one
        [message] = listener.published
        assert message.text.endswith("more 7")
    finally:
        await stop(listener)
