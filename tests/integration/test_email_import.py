"""`intake email import` and `intake email status` on the real broker."""

from __future__ import annotations

import asyncio
import json
import mailbox
from pathlib import Path

import pytest

from connectors.email.inbound.files import import_mail, run_status
from intake import Bus, IntakeSettings, Message

FIXTURES = Path(__file__).resolve().parents[2] / "connectors" / "email" / "fixtures"

pytestmark = pytest.mark.rabbitmq


async def test_import_takes_a_folder_and_an_mbox_by_the_smtp_path_and_status_reports(
        bus: Bus, settings: IntakeSettings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("INTAKE_BUS_PREFIX", settings.bus_prefix)
    monkeypatch.setenv("INTAKE_DATA_DIR", str(settings.data_dir))
    received: list[Message] = []

    async def take(message: Message) -> None:
        received.append(message)

    bus.consume("router", take, Message)
    folder = tmp_path / "mails"
    folder.mkdir()
    for name in ("plain_utf8.eml", "reply_gb2312_foxmail.eml"):
        (folder / name).write_bytes((FIXTURES / name).read_bytes())
    box = mailbox.mbox(str(tmp_path / "archive.mbox"))
    box.add((FIXTURES / "big5_hkscs_label.eml").read_bytes())
    box.flush()
    box.close()

    assert await import_mail(str(folder), "support@shop.example") == 0
    assert await import_mail(str(tmp_path / "archive.mbox"), "support@shop.example") == 0
    assert await import_mail(str(folder), "support@shop.example") == 0  # again: same keys
    for _ in range(200):
        if len(received) >= 5:
            break
        await asyncio.sleep(0.05)
    subjects = sorted({m.subject or "" for m in received})
    assert subjects == sorted(["退货申请", "回复: [#1042] 我们已收到您的邮件", "查詢"])
    assert len({m.idempotency_key for m in received}) == 3
    assert all(m.account == "support@shop.example" for m in received)
    assert await import_mail(str(folder), "nobody@shop.example") == 2

    capsys.readouterr()
    assert await asyncio.to_thread(run_status, None) == 0  # type: ignore[arg-type]
    report = json.loads(capsys.readouterr().out)
    assert report["outbound"] == {} and report["retry_queue"] == 0
