"""The parser pool: a restart that cuts off a slow mail does not take the others with it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from connectors.email.inbound import ParserPool
from connectors.email.normalize import Envelope

from .test_cpython_mail import POLICY

ENVELOPE = Envelope(mail_from="li@example.cn", rcpt_to=("support@shop.example",))


def mail(parts: int, tag: str) -> bytes:
    """A valid multipart mail; 9,000 parts of 2 KB take about half a second to parse."""
    body = b"".join(b"--b\r\nContent-Type: text/plain\r\n\r\npart %d " % i + b"x" * 2000
                    + b"\r\n" for i in range(parts))
    return (b"From: li@example.cn\r\nTo: support@shop.example\r\nSubject: parts\r\n"
            b"Message-ID: <" + tag.encode() + b"@example.cn>\r\n"
            b"Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n" + body + b"--b--\r\n")


async def test_a_mail_cut_off_by_a_restart_is_parsed_again() -> None:
    pool = ParserPool(2, 30.0)
    try:
        args = (ENVELOPE, [(POLICY, None)], datetime(2026, 12, 5, tzinfo=UTC), None)
        assert not isinstance(await pool.parse(mail(1, "warm"), *args), str)  # workers up
        innocent = asyncio.ensure_future(pool.parse(mail(9_000, "innocent"), *args))
        await asyncio.sleep(0.15)
        assert not innocent.done()
        cut = pool._pool
        assert cut is not None
        pool._restart(cut)  # what another mail's timeout or a crashed worker does
        result = await innocent
        assert not isinstance(result, str), result  # parsed, not "worker_crashed"
        [parsed] = result
        assert parsed.message.subject == "parts" and parsed.message.text.startswith("part 0 x")
        assert pool.retried == 1 and pool._pool is not cut
    finally:
        pool.close()


async def test_a_mail_over_its_time_is_cut_off_and_the_pool_serves_the_next() -> None:
    pool = ParserPool(1, 0.2)
    try:
        args = (ENVELOPE, [(POLICY, None)], datetime(2026, 12, 5, tzinfo=UTC), None)
        assert await pool.parse(mail(9_000, "slow"), *args) == "timeout"
        pool.timeout_s = 30.0
        assert not isinstance(await pool.parse(mail(1, "next"), *args), str)
        assert pool.retried == 0
    finally:
        pool.close()
