"""The web form: JSON submissions to POST /forms/contact/submissions with an Idempotency-Key."""

from __future__ import annotations

import orjson

from bench.result import Context
from bench.traffic import connector_scenarios

TOPICS = ("enquiry", "after_sales", "complaint", "suggestion")


class WebformLoad:
    channel = "webform"
    weight = 1.0
    form = "contact"

    def key_prefix(self, tag: str) -> str:
        # Must match the suffix `send` puts in the header (the key is webform:<form>:<header>).
        return f"webform:{self.form}:bench-{tag}-"

    async def send(self, ctx: Context, tag: str, i: int) -> bool:
        body = {"name": f"压测 {i}", "email": f"bench{i % 500}@example.com",
                "topic": TOPICS[i % len(TOPICS)], "subject": f"Bench {tag} {i}",
                "message": "我的订单还没有到，请帮忙查一下。" * 4, "consent": True}
        status, _ = await ctx.client("webform").post(
            f"/forms/{self.form}/submissions", orjson.dumps(body),
            {"Content-Type": "application/json", "Idempotency-Key": f"bench-{tag}-{i}"})
        return status == 201


LOAD = WebformLoad()
SCENARIOS = connector_scenarios(LOAD)
