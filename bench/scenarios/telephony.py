"""Telephony: each message is a whole call, four signed generic CTI events through port 8004
(ringing, answered, transferred, ended), counted when its record is persisted (progress
messages never become ticket messages). The record waits the line's `settle_s` (2 s) for
stragglers, which is in each call's latency, not in the throughput.

`telephony-pop` measures the screen pop: a ringing webhook sent → its `call.ringing` read
from `GET /api/v1/events`. TODO(issue 15): the same to `intake.events`' confirm.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import orjson

from bench.result import Context, Result, Scenario
from bench.stats import summarize
from bench.traffic import connector_scenarios
from connectors.telephony.inbound.generic import sign

SECRET = "whsec_aW50YWtlLWhvdGxpbmUtdGVzdC1zZWNyZXQtMDAx"  # the example's test value
STEPS = (("ringing", 0, {"agents": ["1001", "1002"]}), ("answered", 8, {"agent": "1001"}),
         ("transferred", 60, {"agent": "1002"}), ("ended", 120, {}))


class TelephonyLoad:
    channel = "telephony"
    weight = 0.25
    line = "hotline"

    def key_prefix(self, tag: str) -> str:
        return f"telephony:{self.line}:bench-{tag}-"

    def sent_key(self, stored: str) -> str:
        """The call a stored record belongs to (`…-<i>:record` → `…-<i>`)."""
        return stored.removesuffix(":record")

    async def send(self, ctx: Context, tag: str, i: int) -> bool:
        call_id = f"bench-{tag}-{i}"
        client = ctx.client("telephony")
        for kind, offset, extra in STEPS:
            body = orjson.dumps({
                "event": f"call.{kind}", "call_id": call_id,
                "occurred_at": f"2026-12-05T09:{offset // 60:02d}:{offset % 60:02d}+08:00",
                "from": f"1380013{i % 10000:04d}", "to": "400-800-1234", **extra})
            webhook_id = f"{call_id}-{kind}"
            stamp = int(time.time())
            status, _ = await client.post(f"/cti/{self.line}/events", body, {
                "Content-Type": "application/json", "webhook-id": webhook_id,
                "webhook-timestamp": str(stamp),
                "webhook-signature": sign(SECRET, webhook_id, stamp, body)})
            if status != 202:
                return False
        return True


LOAD = TelephonyLoad()
SCENARIOS = connector_scenarios(LOAD)


class TelephonyPop(Scenario):
    """Screen-pop latency: a `call.ringing` webhook received on 8004 → its `call.ringing`
    event read from `GET /api/v1/events` by a subscriber, at a steady rate of new calls that
    stay ringing (so the calls in progress pile up, as the issue's 1,000 do)."""

    name = "telephony-pop"
    order = 160

    async def run(self, ctx: Context) -> list[Result]:
        count = ctx.n(1000, 60)
        rate = 50.0 if ctx.options.quick else 200.0
        tag = ctx.run_id[-8:] + "p"
        sent: dict[str, float] = {}
        seen: dict[str, float] = {}
        api = ctx.gateway.url("ticket-core")
        headers = {"Authorization": f"Bearer {ctx.gateway.token}"}
        async with ctx.http.get(f"{api}/api/v1/events?types=call.ringing",
                                headers=headers) as stream:

            async def read() -> None:
                async for raw in stream.content:
                    line = raw.decode().strip()
                    if line.startswith("data: "):
                        call_id = orjson.loads(line[6:])["data"]["call_id"]
                        if call_id in sent:
                            seen[call_id] = time.time()
                            if len(seen) == count:
                                return

            reader = asyncio.create_task(read())
            client = ctx.client("telephony")
            started = time.time()
            for i in range(count):
                due = started + i / rate
                await asyncio.sleep(max(0.0, due - time.time()))
                call_id = f"pop-{tag}-{i}"
                body = orjson.dumps({"event": "call.ringing", "call_id": call_id,
                                     "occurred_at": "2026-12-05T09:00:00+08:00",
                                     "from": f"1390013{i % 10000:04d}", "to": "4008001234",
                                     "agents": ["1001"]})
                stamp = int(time.time())
                sent[call_id] = time.time()
                await client.post(f"/cti/{LOAD.line}/events", body, {
                    "Content-Type": "application/json", "webhook-id": call_id,
                    "webhook-timestamp": str(stamp),
                    "webhook-signature": sign(SECRET, call_id, stamp, body)})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(reader, 30)
            reader.cancel()
        latencies = [(seen[k] - sent[k]) * 1000 for k in seen]
        summary = summarize(latencies)
        lost = count - len(seen)
        ctx.log(f"telephony-pop: p50 {summary['p50']} ms, p99 {summary['p99']} ms, "
                f"{lost} pops not seen")
        elapsed = max(max(seen.values(), default=started) - started, 1e-9)
        throughput = round(len(seen) / elapsed, 1)
        return [Result(scenario=self.name, messages=count, load=f"{rate:g}/s",
                       throughput=throughput, rss_mb=ctx.rss.peaks(),
                       ratio=round(throughput / ctx.hop, 3) if ctx.hop else 0.0,
                       check={"ok": lost == 0, "missing": lost, "doubled": 0},
                       latency=summary, ok=lost == 0,
                       failure=f"{lost} pops not seen in 30 s" if lost else None,
                       extra={"target": "p99 ≤ 250 ms (webhook → event stream)",
                              "measured": "webhook sent → call.ringing read from the stream"})]


SCENARIOS.append(TelephonyPop())
