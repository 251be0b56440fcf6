"""Memory growth: RSS after 10,000 and after 50,000 messages (optional: `SCENARIO=memory`).

Closed loop through every connector; RSS is read after each stretch has been persisted and the
services had a second to settle. Growth between the two beyond the caches' bounds is a leak.
It takes several minutes, so `make bench` leaves it out.
"""

from __future__ import annotations

import asyncio

from bench.result import Context, Result, Scenario
from bench.traffic import drive


class Memory(Scenario):
    name = "memory"
    order = 90
    default = False

    async def run(self, ctx: Context) -> list[Result]:
        first, total = (200, 1000) if ctx.options.quick else (10000, 50000)
        c = ctx.options.concurrency
        ctx.log(f"memory: {first} messages, then {total - first} more (closed loop, C={c})")
        await drive(ctx, ctx.loads, "mem1", first, concurrency=c, scenario=self.name,
                    load_label=f"C={c}")
        await asyncio.sleep(1.0)
        ctx.rss.sample()
        after_first = dict(ctx.rss.last)
        result = await drive(ctx, ctx.loads, "mem2", total - first, concurrency=c,
                             scenario=self.name, load_label=f"C={c}")
        await asyncio.sleep(1.0)
        ctx.rss.sample()
        after_total = dict(ctx.rss.last)
        growth = {name: round(after_total[name] - after_first.get(name, 0.0), 1)
                  for name in sorted(after_total)}
        result.messages = total
        result.extra.update({
            f"rss_after_{first}_mb": {k: round(v, 1) for k, v in sorted(after_first.items())},
            f"rss_after_{total}_mb": {k: round(v, 1) for k, v in sorted(after_total.items())},
            "growth_mb": growth})
        ctx.log(f"memory: growth {growth} MB between {first} and {total} messages")
        return [result]


SCENARIOS = [Memory()]
