"""WechatSender against the fake WeChat API: the sender contract, tokens, and every outcome."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from connectors.wechat import CHANNEL
from connectors.wechat.client import WechatClient
from connectors.wechat.outbound import WechatSender
from connectors.wechat.settings import WechatSettings
from intake import Identity, OutboundMessage, SenderRunner, StateStore
from intake.testing import MemoryBus, SenderContract

from .fake_wechat import FakeWechat

OPENID = "oReplyOpenid00000000000000"
SAFE_ID = "wx2c2769f8efd9abc2"


class TestWechatSenderContract(SenderContract):
    channel = CHANNEL
    account = SAFE_ID
    recipient: ClassVar[Identity] = Identity(kind="wechat_openid", value=OPENID)
    failure = "failed"
    failure_reason = "43004 the customer has unfollowed the account"
    fake: FakeWechat

    @pytest.fixture(autouse=True)
    async def _fake(self) -> AsyncIterator[None]:
        self.fake = await FakeWechat().start()
        yield
        await self.fake.close()

    def sender_settings(self, tmp_path: Path) -> Any:
        return WechatSettings(api_base=self.fake.url, wecom_api_base=self.fake.url)

    def delivered(self, sender: Any) -> list[str]:
        assert len(self.fake.sent) == len(sender.sent_ids)
        return list(sender.sent_ids)

    def break_transport(self, sender: Any) -> None:
        self.fake.send_script[OPENID] = [43004]


@pytest.fixture
async def fake() -> AsyncIterator[FakeWechat]:
    server = await FakeWechat().start()
    yield server
    await server.close()


@pytest.fixture
async def runner(tmp_path: Path, fake: FakeWechat) -> AsyncIterator[SenderRunner]:
    runner = SenderRunner(MemoryBus(), "wechat", WechatSender,
                          StateStore(f"sqlite+aiosqlite:///{tmp_path / 'state.sqlite3'}"),
                          settings=WechatSettings(api_base=fake.url, wecom_api_base=fake.url),
                          poll_s=3600)
    await runner.open()
    yield runner
    await runner.close()


def reply(text: str = "您的包裹今天发出。", to: str = OPENID, account: str = SAFE_ID,
          kind: str = "wechat_openid") -> OutboundMessage:
    return OutboundMessage(idempotency_key=f"reply:{time.time_ns()}", ticket_id="t-1",
                           channel="wechat", account=account,
                           to=Identity(kind=kind, value=to), text=text)  # type: ignore[arg-type]


def results(runner: SenderRunner) -> list[tuple[str, str | None, int]]:
    assert isinstance(runner.bus, MemoryBus)
    return [(r.status, r.reason, r.attempt) for _, r in runner.bus.results]


def sender(runner: SenderRunner) -> WechatSender:
    assert isinstance(runner.sender, WechatSender)
    return runner.sender


async def test_a_reply_is_sent_through_the_customer_service_api(
        runner: SenderRunner, fake: FakeWechat) -> None:
    await runner.handle(reply("你好 😀"))
    assert results(runner) == [("sent", None, 1)]
    assert fake.sent == [{"touser": OPENID, "msgtype": "text", "text": {"content": "你好 😀"}}]


async def test_a_wecom_reply_goes_to_the_user_id_with_the_agent_id(
        runner: SenderRunner, fake: FakeWechat) -> None:
    await runner.handle(reply(account="wx5823bf96d3bd56c7-218", kind="wecom_userid",
                              to="wx5823bf96d3bd56c7:mycreate"))
    assert results(runner) == [("sent", None, 1)]
    assert fake.sent[0]["touser"] == "mycreate" and fake.sent[0]["agentid"] == 218
    assert fake.calls["gettoken"] == 1


@pytest.mark.parametrize("errcode", [45015, 45047])
async def test_a_closed_window_is_window_expired_and_sent_when_the_customer_writes(
        runner: SenderRunner, fake: FakeWechat, errcode: int) -> None:
    fake.send_script[OPENID] = [errcode]
    first, second = reply("first"), reply("second")
    await runner.handle(first)
    await runner.handle(second)  # queued behind the first, in order
    assert [(s, r.split(" ")[0] if r else r) for s, r, _ in results(runner)] == [
        ("window_expired", str(errcode)), ("window_expired", "queued")]
    assert "when the customer next writes" in (results(runner)[0][1] or "")
    assert await sender(runner).release_due() == 0  # the customer has not written yet
    await sender(runner).state.note_interaction(SAFE_ID, OPENID)
    assert await sender(runner).release_due() == 2
    assert [m["text"]["content"] for m in fake.sent] == ["first", "second"]
    assert results(runner)[2:] == [("sent", None, 2), ("sent", None, 2)]
    await runner.handle(first)  # a late redelivery: the recorded result again, not a send
    assert len(fake.sent) == 2


async def test_an_unfollowed_customer_is_failed_with_the_errcode(
        runner: SenderRunner, fake: FakeWechat) -> None:
    fake.send_script[OPENID] = [43004]
    await runner.handle(reply())
    assert results(runner) == [("failed", "43004 the customer has unfollowed the account", 1)]


async def test_system_busy_is_retried_and_delivered_exactly_once(
        runner: SenderRunner, fake: FakeWechat) -> None:
    fake.send_script[OPENID] = [-1]
    message = reply()
    await runner.handle(message)
    assert results(runner) == [] and await runner.retries.depth() == 1
    await runner.handle(message)  # redelivered meanwhile: not sent
    assert await runner.retry_due(due_by=time.time() + 86400) == 1
    assert results(runner) == [("sent", None, 2)] and len(fake.sent) == 1


async def test_fifty_concurrent_replies_with_a_cold_cache_fetch_one_token(
        runner: SenderRunner, fake: FakeWechat) -> None:
    await asyncio.gather(*(runner.handle(reply(f"r{i}")) for i in range(50)))
    assert len(fake.sent) == 50 and fake.calls["stable_token"] == 1


async def test_an_invalidated_token_is_refreshed_once(
        runner: SenderRunner, fake: FakeWechat) -> None:
    await runner.handle(reply("a"))
    fake.invalidate(SAFE_ID)
    await asyncio.gather(*(runner.handle(reply(f"b{i}")) for i in range(5)))
    assert len(fake.sent) == 6 and fake.calls["stable_token"] == 2


async def test_a_short_lived_token_is_refreshed_before_use_never_after_a_42001(
        tmp_path: Path, fake: FakeWechat) -> None:
    from connectors.wechat.settings import WechatAccounts
    from intake.config import load_document

    from .simulator import EXAMPLE

    accounts = CHANNEL.load_accounts(load_document(EXAMPLE))
    assert isinstance(accounts, WechatAccounts)
    account = accounts.find(SAFE_ID)
    assert account is not None
    fake.expires_in = 2
    client = WechatClient(WechatSettings(api_base=fake.url))
    try:
        first = await client.token(account)
        await asyncio.sleep(2.1)
        second = await client.token(account)
        assert first != second and fake.calls["stable_token"] == 2
        await client.send(account, {"touser": OPENID, "msgtype": "text",
                                    "text": {"content": "x"}})
    finally:
        await client.close()
    assert fake.calls["custom_send"] == 1  # no 42001 answered first


async def test_check_names_what_is_wrong(fake: FakeWechat) -> None:
    from connectors.wechat.client import check_account
    from connectors.wechat.settings import WechatAccounts
    from intake.config import load_document

    from .simulator import EXAMPLE

    accounts = CHANNEL.load_accounts(load_document(EXAMPLE))
    assert isinstance(accounts, WechatAccounts)
    settings = WechatSettings(api_base=fake.url, wecom_api_base=fake.url)
    for account in accounts.accounts:
        assert (await check_account(settings, account))[0], account.id
    fake.whitelisted = False
    ok, message = await check_account(settings, accounts.accounts[0])
    assert not ok and "40164" in message and "whitelist" in message
    assert "intake-demo-secret" not in message
    bad = accounts.accounts[1].model_copy(update={"app_id": "wx0000000000000000"})
    fake.whitelisted = True
    ok, message = await check_account(settings, bad)
    assert not ok and "40013" in message
    ok, message = await check_account(WechatSettings(api_base="http://127.0.0.1:9"),
                                      accounts.accounts[0])
    assert not ok and "network" in message


async def test_an_image_attachment_is_uploaded_and_sent_after_the_text(
        runner: SenderRunner, fake: FakeWechat, tmp_path: Path) -> None:
    from intake import Attachment, FileBlobStore, digest_of

    blobs = FileBlobStore(tmp_path / "blobs")
    ref = await blobs.put(b"\x89PNG reply image")
    sender(runner).blobs = blobs
    message = reply("见附图").model_copy(update={"attachments": [Attachment(
        filename="label.png", content_type="image/png", size=16, sha256=digest_of(ref),
        blob=ref)]})
    await runner.handle(message)
    assert [m["msgtype"] for m in fake.sent] == ["text", "image"]
    assert fake.sent[1]["image"] == {"media_id": "UPLOADED-1"} and fake.uploads == ["label.png"]
