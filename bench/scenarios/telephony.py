"""Telephony: each message is a whole call, four signed generic CTI events through port 8004
(ringing, answered, transferred, ended), counted when its record is persisted (progress
messages never become ticket messages). The record waits the line's `settle_s` (2 s) for
stragglers, which is in each call's latency, not in the throughput.

TODO(issue 15): the screen-pop latency (event received on 8004 → `call.ringing` on
`intake.events` and on `GET /api/v1/events`) with 1,000 calls in progress.
"""

from __future__ import annotations

import time

import orjson

from bench.result import Context
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
