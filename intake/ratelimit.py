"""Per-client-address rate limiting at an edge, and which address a request came from."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping

__all__ = ["RateLimiter", "client_address"]


class RateLimiter:
    """A token bucket per client address, in memory; the table forgets the least recent."""

    def __init__(self, per_minute: int, burst: int, max_entries: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.max_entries = max_entries
        self.clock = clock
        self.buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str) -> float:
        """Spend one token; 0 when allowed, else the seconds until the next token."""
        now = self.clock()
        tokens, then = self.buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - then) * self.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        self.buckets[key] = (tokens, now)
        while len(self.buckets) > self.max_entries:
            self.buckets.popitem(last=False)
        return wait


def client_address(peer: str | None, headers: Mapping[str, str], *,
                   trust_forwarded_for: bool) -> str:
    """The client's address: the TCP peer, or the hop our own proxy appended to X-Forwarded-For.

    Only the last hop is trusted (and only when told a proxy is in front): the hops before it
    are the client's word and can be forged.
    """
    if trust_forwarded_for:
        hops = [h.strip() for h in headers.get("X-Forwarded-For", "").split(",")]
        if hops and hops[-1]:
            return hops[-1]
    return peer or "unknown"
