"""WeChat: genuine safe-mode callbacks (AES, `msg_signature`) to POST /wechat/<account>.

The mix WeChat's servers send a busy account: 70 % text, 10 % image (its media served by the
fake WeChat API this process runs, `INTAKE_WECHAT_API_BASE`), 10 % text preceded by an event
(a follow, which lands on the customer's timeline and is not counted here), 10 % text retried
at once by WeChat (the same callback signed again: answered as a duplicate, stored once).
A message's MsgId is `bench-<tag>-<i>`, so the exactly-once check reads it back by key prefix;
a hundred customers' openids: the first message of each in a run takes the user-info lookup.
"""

from __future__ import annotations

import time
import urllib.parse

from bench.result import Context
from bench.traffic import connector_scenarios
from connectors.wechat.tests.fake_wechat import FakeWechat, Media
from connectors.wechat.tests.simulator import SAFE, callback, text_xml

ACCOUNT = SAFE
IMAGE = Media(body=b"\xff\xd8" + b"bench-jpeg" * 2000, filename="IMG_bench.jpg")


def _event_xml(openid: str) -> str:
    return (f"<xml><ToUserName><![CDATA[{ACCOUNT['original_id']}]]></ToUserName>"
            f"<FromUserName><![CDATA[{openid}]]></FromUserName>"
            f"<CreateTime>{int(time.time())}</CreateTime>"
            "<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe]]></Event></xml>")


def _image_xml(openid: str, msg_id: str) -> str:
    return (f"<xml><ToUserName><![CDATA[{ACCOUNT['original_id']}]]></ToUserName>"
            f"<FromUserName><![CDATA[{openid}]]></FromUserName>"
            f"<CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[image]]></MsgType>"
            "<PicUrl><![CDATA[http://mmbiz.qpic.cn/bench]]></PicUrl>"
            f"<MediaId><![CDATA[BENCH_IMAGE]]></MediaId><MsgId>{msg_id}</MsgId></xml>")


class WechatLoad:
    channel = "wechat"
    weight = 1.0

    def __init__(self) -> None:
        self.fake: FakeWechat | None = None

    async def start(self) -> dict[str, str]:
        """The fake WeChat API the connector fetches media and user info from."""
        self.fake = await FakeWechat().start()
        self.fake.media["BENCH_IMAGE"] = IMAGE
        return {"INTAKE_WECHAT_API_BASE": self.fake.url,
                "INTAKE_WECHAT_WECOM_API_BASE": self.fake.url}

    async def close(self) -> None:
        if self.fake is not None:
            await self.fake.close()

    def key_prefix(self, tag: str) -> str:
        return f"wechat:{ACCOUNT['id']}:bench-{tag}-"

    async def _post(self, ctx: Context, xml: str) -> int:
        request = callback(ACCOUNT, xml)
        status, _ = await ctx.client("wechat").post(
            f"{request.path}?{urllib.parse.urlencode(request.query)}", request.body,
            {"Content-Type": "text/xml"})
        return status

    async def send(self, ctx: Context, tag: str, i: int) -> bool:
        openid = f"oBench{i % 100:03d}"  # looked up once per run, then cached a day
        msg_id = f"bench-{tag}-{i}"
        kind = i % 10
        if kind == 0:
            return await self._post(ctx, _image_xml(openid, msg_id)) == 200
        if kind == 1:
            # A follow by a customer of its own (an event's key is sender, time and type).
            await self._post(ctx, _event_xml(f"oBenchFollow{tag}{i}"))
        xml = text_xml(ACCOUNT, f"压测消息 {i}：我的订单还没有到，请帮忙查一下。", sender=openid,
                       msg_id=msg_id)
        status = await self._post(ctx, xml)
        if kind == 2 and status == 200:  # WeChat retries: the same callback, signed again
            status = await self._post(ctx, xml)
        return status == 200


LOAD = WechatLoad()
SCENARIOS = connector_scenarios(LOAD)
