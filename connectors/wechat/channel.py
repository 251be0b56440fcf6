"""The WeChat channel's declaration: callbacks in, customer-service messages out."""

from __future__ import annotations

from intake import Channel, Inbound, Task

from . import inbound
from .outbound import WechatSender
from .settings import WechatAccounts, WechatSettings

CHANNEL = Channel(name="wechat", settings=WechatSettings, accounts=WechatAccounts,
                  inbound=Inbound(routes=inbound.routes,
                                  tasks=[Task("wechat-work", inbound.run_worker)]),
                  sender=WechatSender, contexts=[inbound.runtime_context],
                  client_max_size=1024**2)
