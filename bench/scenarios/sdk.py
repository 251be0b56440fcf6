"""The in-app SDK: chat messages from verified users over REST (POST …/messages), each user
signed by HMAC as a company's backend would (the example config's test secret).

One verified user per scenario (the benchmark's check wants keys `<prefix><i>`, and an SDK key
is `sdk:<app>:user:<namespace>:<user id>:<client_msg_id>`), its session opened on the first
message; the benchmark raises the rate limits (`INTAKE_SDK_RATE_LIMIT_SCALE`). The socket's own
figures (acks, pushes, idle sockets) are not measured here yet.
"""

from __future__ import annotations

import hashlib
import hmac

import orjson

from bench.result import Context
from bench.traffic import connector_scenarios

SECRET = b"demo-app-identity-secret-for-tests-only-7f3a9c"  # the example config's test value


class SdkLoad:
    channel = "sdk"
    weight = 0.5
    app = "demo-app"

    def __init__(self) -> None:
        self.sessions: dict[str, str] = {}

    def key_prefix(self, tag: str) -> str:
        # sdk:<app>:user:<namespace>:<user id>:<client_msg_id>, the client_msg_id being i
        return f"sdk:{self.app}:user:demo-shop:bench-{tag}:"

    async def _session(self, ctx: Context, user: str) -> str | None:
        token = self.sessions.get(user)
        if token is None:
            user_hash = hmac.new(SECRET, user.encode(), hashlib.sha256).hexdigest()
            status, body = await ctx.client("sdk").post(
                f"/sdk/v1/apps/{self.app}/sessions",
                orjson.dumps({"user": {"id": user}, "user_hash": user_hash}),
                {"Content-Type": "application/json"})
            if status != 201:
                return None
            token = self.sessions[user] = orjson.loads(body)["session_token"]
        return token

    async def send(self, ctx: Context, tag: str, i: int) -> bool:
        user = f"bench-{tag}"
        token = await self._session(ctx, user)
        if token is None:
            return False
        status, _ = await ctx.client("sdk").post(
            f"/sdk/v1/apps/{self.app}/messages",
            orjson.dumps({"client_msg_id": str(i), "text": f"压测消息 {i}：我的快递还没到"}),
            {"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
        return status == 201


LOAD = SdkLoad()
SCENARIOS = connector_scenarios(LOAD)
