"""The parser pool's time limit counts a mail's parse, not its wait for a worker: a burst of
slow-but-honest mails larger than the pool is parsed in full, none cut off as `timeout`."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from connectors.email.inbound import ParserPool
from connectors.email.normalize import Envelope

from .test_tnef import POLICY


def many_parts(count: int, tag: int) -> bytes:
    parts = "".join(f"--b\r\nContent-Type: application/octet-stream; name=\"f{i}.bin\"\r\n\r\n"
                    f"{i}\r\n" for i in range(count))
    return (f"From: a@example.cn\r\nSubject: burst {tag}\r\nMessage-ID: <burst{tag}@example.cn>"
            f"\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n{parts}--b--\r\n").encode()


async def test_a_burst_larger_than_the_pool_is_parsed_without_timeouts() -> None:
    pool = ParserPool(1, 30.0)
    try:
        raw = many_parts(3000, 0)
        args = (Envelope(mail_from="a@example.cn"), [(POLICY, None)], datetime.now(UTC), None)
        assert not isinstance(await pool.parse(raw, *args), str)  # workers started
        started = time.perf_counter()
        assert not isinstance(await pool.parse(raw, *args), str)
        one = time.perf_counter() - started
        # A limit of five parses, twelve mails at once on one worker: the last waits for eleven.
        pool.timeout_s = max(5 * one, 0.5)
        results = await asyncio.gather(*(pool.parse(many_parts(3000, i), *args)
                                         for i in range(1, 13)))
        assert [r for r in results if isinstance(r, str)] == []
        assert sorted(r[0].message.subject or "" for r in results if not isinstance(r, str)) \
            == sorted(f"burst {i}" for i in range(1, 13))
    finally:
        pool.close()
