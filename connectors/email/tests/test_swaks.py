"""The README's first steps with swaks, the tool an ops team tries a mail server with: a Chinese
subject and body written raw as swaks sends them (8-bit UTF-8, no MIME labels), an unknown
mailbox refused at RCPT, a size over the limit refused before DATA."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from intake.testing import RecordingPublisher

from .test_smtp import Listener, listening

pytestmark = pytest.mark.skipif(shutil.which("swaks") is None,
                                reason="swaks: deploy/local/install-test-tools.sh")


async def swaks(listener: Listener, *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        "swaks", "--server", f"127.0.0.1:{listener.port}", "--from", "li@example.cn",
        "--timeout", "30", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await process.communicate()
    return process.returncode or 0, out.decode("utf-8", "replace")


@pytest.fixture
async def smtp() -> Listener:
    return await listening(RecordingPublisher(), parse_workers=0, max_message_bytes=100_000)


async def test_swaks_mail_becomes_a_message_as_written(smtp: Listener) -> None:
    try:
        code, transcript = await swaks(
            smtp, "--to", "Support@Shop.Example", "--header", "Subject: 退货申请",
            "--body", "订单 8812 外包装破损")
        assert code == 0, transcript
        assert "<-  250 2.0.0" in transcript, transcript
        [message] = smtp.published
        assert message.subject == "退货申请"
        assert message.text == "订单 8812 外包装破损"
        assert [(i.kind, i.value) for i in message.sender.identities] == [
            ("email", "li@example.cn")]
        assert message.account == "support@shop.example"
    finally:
        smtp.server.close()
        await smtp.server.wait_closed()


async def test_swaks_to_an_unknown_mailbox_and_over_the_size_are_refused(
        smtp: Listener, tmp_path: Path) -> None:
    big = tmp_path / "big.txt"
    big.write_bytes((b"x" * 70 + b"\n") * 3000)  # 213 kB, the limit is 100 kB
    try:
        code, transcript = await swaks(smtp, "--to", "nobody@shop.example")
        assert code != 0 and "<** 550 5.1.1 <nobody@shop.example>: no such mailbox here" \
            in transcript, transcript
        code, transcript = await swaks(smtp, "--to", "support@shop.example",
                                       "--body", f"@{big}", "--suppress-data")
        assert code != 0 and "<** 552" in transcript, transcript
        assert smtp.published == []
    finally:
        smtp.server.close()
        await smtp.server.wait_closed()
