"""The WeChat channel's declaration: callbacks in, customer-service messages out."""

from __future__ import annotations

import argparse
import asyncio

from intake import Channel, Command, Inbound, Task

from . import inbound
from .inbound import simulate
from .outbound import WechatSender
from .settings import WechatAccounts, WechatSettings


def _simulate(args: argparse.Namespace) -> int:
    return asyncio.run(simulate.simulate(args))


def _check(args: argparse.Namespace) -> int:
    return asyncio.run(simulate.check(args))


COMMANDS = (
    Command("simulate", "post a callback exactly as WeChat's servers would, then show the "
            "ticket", _simulate, simulate.simulate_arguments),
    Command("check", "fetch an access token for each account and say what is wrong",
            _check, simulate.check_arguments),
)

CHANNEL = Channel(name="wechat", settings=WechatSettings, accounts=WechatAccounts,
                  inbound=Inbound(routes=inbound.routes,
                                  tasks=[Task("wechat-work", inbound.run_worker)]),
                  sender=WechatSender, commands=COMMANDS, contexts=[inbound.runtime_context])
