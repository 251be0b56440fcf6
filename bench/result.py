"""What a scenario is, what it is handed (`Context`) and what it returns (`Result`)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from .lean_http import LeanHttp

if TYPE_CHECKING:
    import aiohttp
    from sqlalchemy.ext.asyncio import AsyncEngine

    from .gateway import Gateway, RssSampler


@dataclass
class Options:
    scenarios: list[str]
    n: int | None = None  # messages per scenario (None: each scenario's default)
    rate: float | None = None  # open-loop rate per second (None: 0.2 × the raw hop)
    concurrency: int = 32
    db: str = "sqlite"
    quick: bool = False  # the smoke test's tiny run
    profile: bool = False
    sweep_step_s: float = 4.0
    knee_p99_ms: float = 50.0
    # A scenario waits this long for the next message to be persisted before it counts the
    # rest as lost.
    stall_s: float = 15.0


@dataclass
class Context:
    options: Options
    amqp_url: str
    prefix: str
    run_id: str
    gateway: Gateway
    engine: AsyncEngine
    rss: RssSampler
    http: aiohttp.ClientSession
    loads: list[Any] = field(default_factory=list)
    hop: float | None = None  # the raw hop in messages per second, measured first
    lean: dict[str, LeanHttp] = field(default_factory=dict)

    def client(self, service: str) -> LeanHttp:
        """The load generator's lean HTTP client for a service (bench/lean_http.py)."""
        if service not in self.lean:
            self.lean[service] = LeanHttp("127.0.0.1", self.gateway.ports[service])
        return self.lean[service]

    def n(self, default: int, quick: int) -> int:
        return self.options.n or (quick if self.options.quick else default)

    def base_rate(self) -> float:
        """The rate the open-loop defaults and the sweep are fractions of: the raw hop.

        The smoke test caps it so that its tiny run stays a few seconds long.
        """
        hop = self.hop or 1000.0
        return min(hop, 250.0) if self.options.quick else hop

    def open_rate(self) -> float:
        if self.options.rate:
            return self.options.rate
        return round(0.2 * self.base_rate(), 1)

    def open_n(self, rate: float, seconds: float = 10.0) -> int:
        """Messages of an open loop: N when given, else `seconds` (1 in quick mode) of load."""
        return self.options.n or max(10, int(rate * (1.0 if self.options.quick else seconds)))

    def ratio(self, throughput: float | None) -> float | None:
        if not throughput or not self.hop:
            return None
        return round(throughput / self.hop, 3)

    def log(self, text: str) -> None:
        print(f"  · {text}", flush=True)


@dataclass
class Result:
    scenario: str
    messages: int
    load: str  # "C=32", "300/s", "10 rules"
    throughput: float | None  # messages (or decisions) per second
    latency: dict[str, Any] | None = None  # request → persisted (router-decision: per decision)
    unit: str = "ms"
    http: dict[str, Any] | None = None  # request → HTTP answer
    rss_mb: dict[str, float] = field(default_factory=dict)
    ratio: float | None = None  # throughput / the raw hop
    check: dict[str, Any] | None = None  # the exactly-once check
    ok: bool = True
    failure: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return _clean(asdict(self))


def _clean(value: Any) -> Any:
    """JSON has no NaN: write null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


class Scenario:
    """One row (or a few) of the table. `order` places it; `default` puts it in `make bench`."""

    name: str = ""
    order: int = 100
    default: bool = True
    needs_gateway: bool = True

    async def run(self, ctx: Context) -> list[Result]:
        raise NotImplementedError
