"""The telephony channel's declaration: what the kernel needs to run it."""

from intake import Channel, Inbound, Task

from . import inbound
from .settings import TelephonyAccounts, TelephonySettings

CHANNEL = Channel(
    name="telephony", settings=TelephonySettings, accounts=TelephonyAccounts,
    inbound=Inbound(routes=inbound.routes, tasks=[Task("calls", inbound.run_timer),
                                                     Task("pbx-clients", inbound.run_pbx_clients,
                                                          critical=False)]),
    contexts=[inbound.telephony_context], ready_checks=[inbound.lines_ready],
    client_max_size=256 * 1024)
