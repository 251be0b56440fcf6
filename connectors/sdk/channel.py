"""The SDK channel's declaration: REST (and later a socket) for apps, and its sender."""

from __future__ import annotations

from intake import Channel, Inbound

from . import inbound
from .outbound import SdkSender
from .settings import SdkAccounts, SdkSettings

CHANNEL = Channel(name="sdk", settings=SdkSettings, accounts=SdkAccounts,
                  inbound=Inbound(routes=inbound.routes), sender=SdkSender,
                  contexts=(inbound.runtime_context,),
                  shutdown_hooks=(inbound.close_sockets,))
