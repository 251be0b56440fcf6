"""The email connector's durable state, on the kernel's state store.

- `email:caps`: automatic mail sent per recipient, per hour and per day (the loop breaker);
- `email:bounced`: addresses a delivery report said failed permanently, with when (automatic
  mail to them is held back for 60 days);
- `imap:<account>`: each IMAP mailbox's cursor (UIDVALIDITY and the highest UID made durable).

The sent-ledger of outbound mail is the kernel's (`sent:email`).
"""

from __future__ import annotations

import time
from typing import Any

from intake import StateNamespace, StateStore

BOUNCE_HOLD_S = 60 * 86400.0


class EmailState:
    """Typed views over the state store's namespaces for this channel."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self.caps = store.namespace("email:caps")
        self.bounced = store.namespace("email:bounced")

    async def note_bounced(self, addresses: list[str], *, now: float | None = None) -> None:
        at = time.time() if now is None else now
        for address in addresses:
            await self.bounced.put(address.lower(), {"at": at})

    async def bounced_recently(self, address: str, *, now: float | None = None) -> bool:
        entry = await self.bounced.get(address.lower())
        at = time.time() if now is None else now
        return isinstance(entry, dict) and at - float(entry.get("at", 0)) < BOUNCE_HOLD_S

    async def take_cap(self, address: str, per_hour: int, per_day: int, *,
                       now: float | None = None) -> bool:
        """Count one automatic mail to `address`; False (nothing counted) when over a cap."""
        at = time.time() if now is None else now
        hour_key = f"{address.lower()}:h:{int(at // 3600)}"
        day_key = f"{address.lower()}:d:{int(at // 86400)}"
        hour = int(await self.caps.get(hour_key, 0))
        day = int(await self.caps.get(day_key, 0))
        if hour >= per_hour or day >= per_day:
            return False
        await self.caps.put(hour_key, hour + 1)
        await self.caps.put(day_key, day + 1)
        return True

    def cursors(self, account: str) -> StateNamespace:
        """An IMAP mailbox's cursors, keyed by folder."""
        return self.store.namespace(f"imap:{account}"[:200])


def status_namespace(store: StateStore) -> StateNamespace:
    """Each IMAP mailbox's last known state, written by its poller on every change."""
    return store.namespace("email:status")


async def status_report(store: StateStore, account_ids: list[str]) -> dict[str, Any]:
    """What `intake email status` prints: per mailbox cursor and state, outbound by status."""
    mailboxes: dict[str, Any] = {}
    for account in account_ids:
        cursors = dict(await EmailState(store).cursors(account).items())
        state = await status_namespace(store).get(account)
        if cursors or state:
            mailboxes[account] = {"imap": state, "cursors": cursors}
    outbound: dict[str, int] = {}
    for _key, entry in await store.namespace("sent:email").items(limit=1_000_000):
        status = (entry.get("result") or {}).get("status") if isinstance(entry, dict) else None
        name = status or (entry.get("state") if isinstance(entry, dict) else None) or "unknown"
        name = {"retrying": "deferred", "sending": "sending", "taken": "pending"}.get(name, name)
        outbound[name] = outbound.get(name, 0) + 1
    deferred = await store.queue("retry:email").depth()
    return {"mailboxes": mailboxes, "outbound": outbound, "retry_queue": deferred}
