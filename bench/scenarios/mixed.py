"""Every connector at once in its proportion (`LOAD.weight`), open loop at 0.2 × the raw hop.

With the web form the only connector so far, mixed is the web form alone; each connector that
lands adds its load (and weight) by exporting `LOAD` from its scenario module. Memory targets
(connectors ≤ 150 MB, ticket core ≤ 300 MB) are read at the end of this scenario.
"""

from __future__ import annotations

from bench.result import Context, Result, Scenario
from bench.traffic import drive

RSS_LIMITS_MB = {"ticket-core": 300.0, "router": 150.0}  # connectors: 150 MB each
CONNECTOR_RSS_LIMIT_MB = 150.0


class Mixed(Scenario):
    name = "mixed"
    order = 70

    async def run(self, ctx: Context) -> list[Result]:
        rate = ctx.open_rate()
        n = ctx.open_n(rate)
        shares = {load.channel: load.weight for load in ctx.loads}
        ctx.log(f"mixed: {n} messages at {rate:g}/s, shares {shares}")
        result = await drive(ctx, ctx.loads, "mixed", n, rate=rate, scenario=self.name,
                             load_label=f"{rate:g}/s")
        end_rss = {name: round(value, 1) for name, value in sorted(ctx.rss.last.items())}
        result.extra.update({
            "shares": shares,
            "rss_at_end_mb": end_rss,
            "rss_within_limits": all(
                value <= RSS_LIMITS_MB.get(name, CONNECTOR_RSS_LIMIT_MB)
                for name, value in end_rss.items()),
        })
        return [result]


SCENARIOS = [Mixed()]
