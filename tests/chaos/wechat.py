"""WeChat callbacks as the chaos load: the same accounting as the web form's (tests/chaos).

`WechatLoadDriver` plays WeChat's servers: each submission is a genuine signed and encrypted
WeCom text callback from a customer of its own (one ticket each), retried as WeChat retries
(again after a failure, with the same MsgId), and counted accepted only on a 2xx. Its text
carries the run's content marker, so `check` finds duplicates by content.
"""

from __future__ import annotations

import aiohttp

from connectors.wechat.tests.simulator import WECOM, callback, text_xml

from .harness import LoadDriver

SERVICE = "wechat"


class WechatLoadDriver(LoadDriver):
    def message_key(self, header_key: str) -> str:
        return f"wechat:{WECOM['id']}:{header_key}"

    async def submit(self, http: aiohttp.ClientSession, index: int) -> None:
        key = self.header_key(index)
        sub = self.start(key)
        xml = text_xml(WECOM, f"chaos submission {index} of run {self.run_id}",
                       sender=f"chaos-{self.run_id}-{index}", msg_id=key)
        base = self.gateway[SERVICE].base

        async def post() -> int:
            request = callback(WECOM, xml)  # signed afresh: WeChat's retries carry new nonces
            async with http.post(f"{base}{request.path}", params=request.query,
                                 data=request.body,
                                 timeout=aiohttp.ClientTimeout(total=5)) as response:
                await response.read()
                return response.status

        if await self.deliver(sub, post):
            self.accept(sub)
