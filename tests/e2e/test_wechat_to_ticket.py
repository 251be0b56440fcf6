"""WeChat end to end on the real broker: callbacks become tickets, agent replies go out through
the fake WeChat API, and a closed 48-hour window shows `window_expired`, then `sent`.

Ticket core, router and web form run in this process (tests/e2e/test_webform_to_ticket.py), and
the WeChat connector is built by the kernel from its Channel declaration, as `intake run wechat`
builds it, pointed at the fake WeChat API.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from connectors.wechat import CHANNEL as WECHAT
from connectors.wechat.tests.fake_wechat import FakeWechat, Media
from connectors.wechat.tests.simulator import SAFE, callback, text_xml
from intake.cli import load_config
from intake.service import serve
from intake.settings import IntakeSettings
from tests.e2e.test_webform_to_ticket import Gateway, find_ticket, free_port, running_gateway
from tests.support import eventually

OPENID = "oE2eOpenid0000000000000000"


@contextlib.asynccontextmanager
async def wechat_connector(settings: IntakeSettings) -> AsyncIterator[str]:
    service = WECHAT.build_service(settings, load_config(settings))
    stop, started = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(serve([service], stop=stop, started=lambda _: started.set()))
    await asyncio.wait_for(started.wait(), 30)
    url = f"http://127.0.0.1:{service.port}"
    try:
        async with aiohttp.ClientSession() as http:
            async def ready() -> bool:
                async with http.get(f"{url}/readyz") as response:
                    body = await response.text()
                return response.status == 200 and "consumer:outbound.wechat" in body
            await eventually(ready, timeout=30)
        yield url
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


@pytest.fixture
async def gateway(settings: IntakeSettings, monkeypatch: pytest.MonkeyPatch,
                  ) -> AsyncIterator[tuple[Gateway, str, FakeWechat]]:
    fake = await FakeWechat().start()
    monkeypatch.setenv("INTAKE_TICKET_CORE_REPLY_CHANNELS", "wechat")
    monkeypatch.setenv("INTAKE_TICKET_CORE_RELAY_POLL_S", "0.2")
    monkeypatch.setenv("INTAKE_WECHAT_PORT", str(free_port()))
    monkeypatch.setenv("INTAKE_WECHAT_API_BASE", fake.url)
    monkeypatch.setenv("INTAKE_WECHAT_WECOM_API_BASE", fake.url)
    try:
        async with running_gateway(settings, monkeypatch) as gw:
            async with wechat_connector(gw.settings) as url:
                yield gw, url, fake
    finally:
        await fake.close()


async def post(http: aiohttp.ClientSession, url: str, xml: str) -> None:
    request = callback(SAFE, xml)
    async with http.post(f"{url}{request.path}", params=request.query,
                         data=request.body) as response:
        assert response.status == 200, await response.text()


async def reply_delivery(http: aiohttp.ClientSession, gw: Gateway, ticket_id: str,
                         reply_id: str) -> dict[str, Any]:
    async with http.get(f"{gw.api}/api/v1/tickets/{ticket_id}", headers=gw.headers()) as r:
        [reply] = [m for m in (await r.json())["messages"] if m["id"] == reply_id]
    return reply.get("delivery") or {}


async def test_a_wechat_conversation_end_to_end(
        gateway: tuple[Gateway, str, FakeWechat]) -> None:
    gw, url, fake = gateway
    fake.unionids[OPENID] = "uE2eUnion"
    fake.media["IMG1"] = Media(body=b"\xff\xd8e2e-image", filename="receipt.jpg")
    now = int(time.time())
    async with aiohttp.ClientSession() as http:
        await post(http, url, text_xml(SAFE, "你好，订单没收到", sender=OPENID, msg_id="5001",
                                       create_time=now))
        ticket = await find_ticket(http, gw, idempotency_key=f"wechat:{SAFE['id']}:5001")
        async with http.get(f"{gw.api}/api/v1/customers/{ticket['customer_id']}",
                            headers=gw.headers()) as response:
            customer = await response.json()
        kinds = {(i["kind"], i["value"]) for i in customer["identities"]}
        assert {("wechat_openid", OPENID), ("wechat_unionid", "uE2eUnion")} <= kinds

        image = (f"<xml><ToUserName><![CDATA[{SAFE['original_id']}]]></ToUserName><FromUserName>"
                 f"<![CDATA[{OPENID}]]></FromUserName><CreateTime>{now + 1}</CreateTime>"
                 "<MsgType><![CDATA[image]]></MsgType><PicUrl><![CDATA[http://x]]></PicUrl>"
                 "<MediaId><![CDATA[IMG1]]></MediaId><MsgId>5002</MsgId></xml>")
        await post(http, url, image)
        event = (f"<xml><ToUserName><![CDATA[{SAFE['original_id']}]]></ToUserName><FromUserName>"
                 f"<![CDATA[{OPENID}]]></FromUserName><CreateTime>{now - 60}</CreateTime>"
                 "<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe]]></Event></xml>")
        await post(http, url, event)

        async def with_image() -> dict[str, Any] | None:
            async with http.get(f"{gw.api}/api/v1/tickets/{ticket['id']}",
                                headers=gw.headers()) as response:
                detail = await response.json()
            return detail if len(detail["messages"]) == 2 else None
        detail = await eventually(with_image, timeout=30)
        attachment = detail["messages"][1]["attachments"][0]
        assert attachment["sha256"] == hashlib.sha256(b"\xff\xd8e2e-image").hexdigest()

        async def with_event() -> list[Any] | None:
            async with http.get(f"{gw.api}/api/v1/customers/{ticket['customer_id']}",
                                headers=gw.headers()) as response:
                events = (await response.json())["events"]
            return events or None
        [subscribed] = await eventually(with_event, timeout=30)
        assert subscribed["type"] == "subscribe" and subscribed["channel"] == "wechat"

        # The agent answers: sent through the customer-service API.
        async with http.post(f"{gw.api}/api/v1/tickets/{ticket['id']}/replies",
                             headers=gw.headers(), json={"text": "已为您补发。"}) as response:
            assert response.status == 201, await response.text()
            first = await response.json()

        async def status_of(reply_id: str, wanted: str) -> dict[str, Any] | None:
            delivery = await reply_delivery(http, gw, ticket["id"], reply_id)
            return delivery if delivery.get("status") == wanted else None
        await eventually(lambda: status_of(first["id"], "sent"), timeout=30)
        assert fake.sent[0] == {"touser": OPENID, "msgtype": "text",
                                "text": {"content": "已为您补发。"}}

        # The window has closed: window_expired with WeChat's code, then sent when they write.
        fake.send_script[OPENID] = [45015]
        async with http.post(f"{gw.api}/api/v1/tickets/{ticket['id']}/replies",
                             headers=gw.headers(), json={"text": "还在吗？"}) as response:
            second = await response.json()
        held = await eventually(lambda: status_of(second["id"], "window_expired"), timeout=30)
        assert held["reason"].startswith("45015")
        await post(http, url, text_xml(SAFE, "在的", sender=OPENID, msg_id="5003",
                                       create_time=now + 2))
        await eventually(lambda: status_of(second["id"], "sent"), timeout=30)
        assert [m["text"]["content"] for m in fake.sent] == ["已为您补发。", "还在吗？"]


async def test_simulate_prints_the_ticket_number(
        gateway: tuple[Gateway, str, FakeWechat], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """`intake wechat simulate`, as ops run it against an installation (user story 3)."""
    import argparse

    from connectors.wechat.inbound import simulate

    gw, url, _ = gateway
    monkeypatch.setenv("INTAKE_TICKET_CORE_URL", gw.api)
    monkeypatch.setenv("INTAKE_API_TOKEN", gw.token)
    args = argparse.Namespace(account=SAFE["id"], type="text", sender="oDemoOpenid000000000000000",
                              text="你好，订单没收到", media_id="M", url=url, wait_s=30.0)
    assert await simulate.simulate(args) == 0
    out = capsys.readouterr().out
    assert re.search(r"^ticket \d+ \(", out, re.MULTILINE), out
