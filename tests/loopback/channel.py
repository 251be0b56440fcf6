"""The loopback channel's declaration: no HTTP routes, a frame parser inbound, a file sender.

It stands in for the `api` channel (a name the message schema knows) so that tests can carry
replies end to end before the real senders exist.
"""

from __future__ import annotations

from aiohttp import web

from intake import Channel

from .outbound import LoopbackSender
from .settings import LoopbackAccounts, LoopbackSettings


def routes() -> list[web.RouteDef]:
    """None: the loopback's inbound is `inbound.frames.handle_frame`, called by its transport."""
    return []


CHANNEL = Channel(name="api", settings=LoopbackSettings, accounts=LoopbackAccounts,
                  routes=routes, sender=LoopbackSender)
