"""The email channel's declaration: the SMTP listener, its deliverer, and the sender."""

from __future__ import annotations

from intake import Channel, Inbound

from .inbound import imap, smtp
from .outbound import EmailSender
from .settings import EmailAccounts, EmailSettings

CHANNEL = Channel(name="email", settings=EmailSettings, accounts=EmailAccounts,
                  inbound=Inbound(listeners=[smtp.LISTENER], tasks=[imap.TASK]),
                  sender=EmailSender, contexts=[smtp.deliverer_context])
