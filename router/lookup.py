"""The customer lookup: who wrote, as the ticket core knows them, for rules reading `customer.*`.

One `GET /api/v1/customers?identity=…&identity=…` per sender (all its identities; the ticket
core answers the first found in that order), cached with a TTL (`options.customer_lookup`:
`ttl` for a hit, `negative_ttl` for a miss, at most `max_entries`). Concurrent lookups of one
sender share a request; each is bounded by `timeout`, so a slow ticket core costs a message at
most that. After five failures in a row the router stops asking for `backoff` and routes with
`customer.lookup == 'backoff'`. A failure never stops routing: the decision says what happened.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
import orjson
from cachetools import TLRUCache

from intake.message import Message

from .models import CustomerLookup

FAILURES_BEFORE_BACKOFF = 5
# What `customer.*` reads of the ticket core's customer view.
SNAPSHOT_KEYS = ("id", "vip_level", "language", "tickets_count", "open_tickets_count", "fields")

Key = tuple[str, ...]
Found = tuple[dict[str, Any] | None, str]  # (snapshot or None, lookup result)


def sender_key(message: Message) -> Key:
    """The sender's identities as `<kind>:<value>`, in the message's order."""
    return tuple(f"{identity.kind}:{identity.value}" for identity in message.sender.identities)


def snapshot_of(view: Mapping[str, Any]) -> dict[str, Any]:
    """The rules' view of a customer from the API's; keys the ticket core lacks read null."""
    snapshot = {key: view.get(key) for key in SNAPSHOT_KEYS}
    snapshot["fields"] = snapshot["fields"] or {}
    snapshot["known"] = True
    return snapshot


class CustomerDirectory:
    """Cached, shared, bounded lookups against the ticket core's agent API."""

    def __init__(self, base_url: str, token: Callable[[], str | None], *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """`token` is read per request: the ticket core may write its generated token after
        the router started."""
        self._url = base_url.rstrip("/") + "/api/v1/customers"
        self._token = token
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self._options: CustomerLookup | None = None
        self._cache: TLRUCache[Key, Found] = TLRUCache(maxsize=1, ttu=self._expiry)
        self._inflight: dict[Key, asyncio.Task[Found]] = {}
        self._failures = 0
        self._backoff_until = 0.0

    async def close(self) -> None:
        for task in list(self._inflight.values()):
            task.cancel()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _expiry(self, key: Key, found: Found, now: float) -> float:
        assert self._options is not None
        ttl = self._options.ttl if found[1] == "hit" else self._options.negative_ttl
        return now + ttl.total_seconds()

    def _configure(self, options: CustomerLookup) -> None:
        # A reload may change the cache's shape; the entries go with the old shape.
        if options != self._options:
            self._options = options
            self._cache = TLRUCache(maxsize=options.max_entries, ttu=self._expiry,
                                    timer=self._clock)

    def known(self, message: Message, options: CustomerLookup) -> Found | None:
        """The answer without asking: cached, an anonymous sender (`miss`) or backing off;
        None when only a request can tell (`find`). Synchronous, so a batch whose senders are
        all cached awaits nothing."""
        self._configure(options)
        key = sender_key(message)
        if not key:
            return None, "miss"  # nobody to look up: an anonymous sender is unknown
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        if self._clock() < self._backoff_until:
            return None, "backoff"
        return None

    async def find(self, message: Message, options: CustomerLookup) -> Found:
        """(snapshot, `hit`) or (None, `miss` | `timeout` | `error` | `backoff`)."""
        known = self.known(message, options)
        if known is not None:
            return known
        key = sender_key(message)
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.ensure_future(self._fetch(key, options))
            self._inflight[key] = task
            task.add_done_callback(lambda _: self._inflight.pop(key, None))
        # Shielded: one waiter cancelled (its batch failed) leaves the shared request running.
        return await asyncio.shield(task)

    async def _fetch(self, key: Key, options: CustomerLookup) -> Found:
        try:
            async with asyncio.timeout(options.timeout.total_seconds()):
                found = await self._request(key)
        except TimeoutError:
            return self._failed("timeout")
        except (aiohttp.ClientError, OSError, ValueError, LookupError, TypeError):
            return self._failed("error")
        self._failures = 0
        self._cache[key] = found
        return found

    def _failed(self, result: str) -> Found:
        self._failures += 1
        if self._failures >= FAILURES_BEFORE_BACKOFF:
            assert self._options is not None
            self._backoff_until = self._clock() + self._options.backoff.total_seconds()
        return None, result

    async def _request(self, key: Key) -> Found:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        token = self._token()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self._session.get(self._url, params=[("identity", i) for i in key],
                                     headers=headers) as reply:
            reply.raise_for_status()
            page = orjson.loads(await reply.read())
        items = page["items"]
        if not items:
            return None, "miss"
        return snapshot_of(items[0]), "hit"
