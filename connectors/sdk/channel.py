"""The SDK channel's declaration: REST and socket for apps, ticket events, and its sender."""

from __future__ import annotations

from intake import Channel, Inbound, Task

from . import inbound
from .outbound import SdkSender, consume_ticket_events, prune_forever
from .settings import SdkAccounts, SdkSettings

CHANNEL = Channel(name="sdk", settings=SdkSettings, accounts=SdkAccounts,
                  inbound=Inbound(routes=inbound.routes,
                                  tasks=[Task("ticket-events", consume_ticket_events),
                                         Task("prune", prune_forever, critical=False)]),
                  sender=SdkSender,
                  contexts=(inbound.runtime_context,),
                  shutdown_hooks=(inbound.close_sockets,))
