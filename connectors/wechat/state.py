"""The WeChat connector's durable state, on the kernel's state store.

- `accepted`: idempotency keys already made durable (a retry is answered at once);
- `nonces`: (account, timestamp, nonce, signature) → the body's digest, for replay checks;
- `work`: the media / user-info work queue (a callback waiting for it is durable here);
- `tokens`: access tokens per account (a restart does not fetch again);
- `users`: user-info answers per account and openid (the unionid), cached 24 h;
- `passive`: when a customer last got the passive reply;
- `waiting`: replies held for a customer whose 48-hour window closed, in order;
- `interacted`: when each customer last interacted (a message, follow, scan or click).
The sent-ledger of replies is the kernel's (`sent:wechat`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from intake import StateNamespace, StateQueue, StateStore

SEP = "\x1f"  # between the parts of a key: never in an account id, openid or nonce
# An interaction is written at most once per this many seconds per customer and process; the
# sender counts an interaction this much before a reply was held as after it (at worst one
# early attempt, which WeChat refuses again, and the reply keeps waiting).
INTERACTION_GRAIN_S = 5.0


@dataclass
class WechatState:
    store: StateStore

    def __post_init__(self) -> None:
        self.accepted: StateNamespace = self.store.namespace("wechat:accepted")
        self.nonces: StateNamespace = self.store.namespace("wechat:nonces")
        self.work: StateQueue = self.store.queue("wechat:work")
        self.tokens: StateNamespace = self.store.namespace("wechat:tokens")
        self.users: StateNamespace = self.store.namespace("wechat:users")
        self.passive: StateNamespace = self.store.namespace("wechat:passive")
        self.waiting: StateNamespace = self.store.namespace("wechat:waiting")
        self.interacted: StateNamespace = self.store.namespace("wechat:interacted")
        # The accepted keys this process knows, so that a retry costs no database read.
        self._accepted_here: dict[str, float] = {}
        self._passive_here: dict[str, float] = {}
        self._users_here: dict[str, dict[str, Any]] = {}
        self._interacted_here: dict[str, float] = {}

    async def open(self) -> None:
        await self.store.open()

    async def close(self) -> None:
        await self.store.close()

    # -- callbacks ------------------------------------------------------------------------------

    async def was_accepted(self, key: str, ttl_s: float, *, ask_store: bool = True) -> bool:
        """Accepted within `ttl_s`: known to this process, or (`ask_store`) to the store."""
        now = time.time()
        at = self._accepted_here.get(key)
        if at is not None and now - at < ttl_s:
            return True
        if not ask_store:
            return False
        entry = await self.accepted.get(key)
        return entry is not None and now - float(entry.get("at", 0)) < ttl_s

    def remember_accepted(self, key: str) -> None:
        """This process knows `key` is accepted (before the durable write below lands)."""
        self._accepted_here[key] = time.time()
        if len(self._accepted_here) > 100_000:  # forget the oldest half
            for old in sorted(self._accepted_here, key=self._accepted_here.__getitem__)[:50_000]:
                del self._accepted_here[old]

    async def mark_accepted(self, key: str) -> None:
        self.remember_accepted(key)
        await self.accepted.put(key, {"at": time.time()})

    async def note_nonce(self, account: str, timestamp: str, nonce: str, signature: str,
                         digest: str) -> str | None:
        """Remember this (timestamp, nonce, signature); the digest seen before, if any."""
        key = SEP.join((account, timestamp, nonce, signature))
        if await self.nonces.put_new(key, {"digest": digest, "at": time.time()}):
            return None
        entry = await self.nonces.get(key) or {}
        return str(entry.get("digest", ""))

    async def prune_nonces(self, account: str, older_than: float, limit: int = 500) -> int:
        """Forget this account's nonces from before `older_than` (they are stale anyway).

        Keys sort by timestamp within an account (ten digits until 2286), oldest first.
        """
        removed = 0
        for key, _ in await self.nonces.items(prefix=account + SEP, limit=limit):
            timestamp = key.split(SEP)[1]
            if not timestamp.isdigit() or int(timestamp) >= older_than:
                break
            removed += await self.nonces.delete(key)
        return removed

    async def prune_accepted(self, account: str, older_than: float, limit: int = 500) -> int:
        """Forget accepted keys of `account` from before `older_than`.

        MsgIds grow with time, so under each leading digit the oldest keys sort first; a pass
        reads up to `limit` keys per digit and stops at the first one still fresh.
        """
        removed = 0
        for digit in "0123456789":
            for key, value in await self.accepted.items(
                    prefix=f"wechat:{account}:{digit}", limit=limit):
                if float((value or {}).get("at", 0)) >= older_than:
                    break
                removed += await self.accepted.delete(key)
        return removed

    async def passive_due(self, account: str, openid: str, min_interval_s: int) -> bool:
        """True when this customer may get the passive reply now; `note_passive` records it."""
        key = SEP.join((account, openid))
        now = time.time()
        last = self._passive_here.get(key)
        if last is None:
            stored = await self.passive.get(key)
            last = None if stored is None else float(stored)
        return last is None or now - last >= min_interval_s

    def remember_passive(self, account: str, openid: str) -> float:
        if len(self._passive_here) > 100_000:
            self._passive_here.clear()
        at = self._passive_here[SEP.join((account, openid))] = time.time()
        return at

    async def note_passive(self, account: str, openid: str, at: float) -> None:
        await self.passive.put(SEP.join((account, openid)), at)

    def interaction_noted_lately(self, account: str, customer: str) -> bool:
        """True when this process wrote the customer's interaction under INTERACTION_GRAIN_S
        ago (a chatty customer costs one write per grain, not one per message)."""
        at = self._interacted_here.get(SEP.join((account, customer)))
        return at is not None and time.time() - at < INTERACTION_GRAIN_S

    async def note_interaction(self, account: str, customer: str) -> None:
        key = SEP.join((account, customer))
        now = time.time()
        if len(self._interacted_here) > 100_000:
            self._interacted_here.clear()
        self._interacted_here[key] = now
        await self.interacted.put(key, now)

    async def last_interaction(self, account: str, customer: str) -> float | None:
        value = await self.interacted.get(SEP.join((account, customer)))
        return None if value is None else float(value)

    async def user(self, account: str, openid: str) -> dict[str, Any] | None:
        """The cached user-info answer (`unionid`, `at`) of an openid, if any."""
        key = SEP.join((account, openid))
        found = self._users_here.get(key)
        if found is None:
            found = await self.users.get(key)
            if found is not None:
                self._remember_user(key, found)
        return found

    async def put_user(self, account: str, openid: str, value: dict[str, Any]) -> None:
        key = SEP.join((account, openid))
        await self.users.put(key, value)
        self._remember_user(key, value)

    def _remember_user(self, key: str, value: dict[str, Any]) -> None:
        if len(self._users_here) > 100_000:
            self._users_here.clear()
        self._users_here[key] = value

    # -- the sender's replies waiting for their customer ----------------------------------------

    async def hold_reply(self, account: str, customer: str, item: dict[str, Any]) -> str:
        key = SEP.join((account, customer, f"{time.time_ns():020d}"))
        await self.waiting.put(key, item)
        return key

    async def waiting_replies(self, limit: int = 1000) -> list[tuple[str, dict[str, Any]]]:
        """Every held reply, grouped by account and customer, oldest first in each."""
        return [(key, value) for key, value in await self.waiting.items(limit=limit)]

    @staticmethod
    def customer_of(key: str) -> tuple[str, str]:
        account, customer, _ = key.split(SEP, 2)
        return account, customer
