"""The web form channel's declaration: hosted forms whose submissions become messages."""

from __future__ import annotations

from intake import Channel, Inbound

from . import inbound
from .settings import WebformAccounts, WebformSettings

CHANNEL = Channel(name="webform", settings=WebformSettings, accounts=WebformAccounts,
                  inbound=Inbound(routes=inbound.routes))
