"""Phone calls as the chaos load: signed generic CTI webhooks while the telephony connector is
SIGKILLed and its broker link drops (tests/chaos/README.md, `telephony_faults`).

`CallLoadDriver` plays a PBX: each submission is one call from a caller of its own (so one
ticket each), three or two events (`ringing`, `answered`, `ended`, or `ringing`, `missed`) with
pauses between them, some sent out of order and some sent twice under a new `webhook-id` (a
PBX re-signing its retry). Each webhook is sent again with the same `webhook-id` until it is
answered 2xx; a call is accepted once all its events were. Every accepted call must end as
exactly one record on a ticket of its own, with one screen pop, and no progress message may
become a ticket message.

The connector reaches the broker through a `BrokerProxy` of its own (tests/support.py), so
its link drops while the rest of the gateway keeps running.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from connectors.telephony.inbound.generic import sign
from tests.support import BrokerProxy

from .harness import SERVICES, Gateway, LoadDriver, Outcome, count_tickets, read_persisted
from .scenarios import Lab, Result, Run, _background

SERVICE = "telephony"
LINE = "hotline"
SECRET = "whsec_aW50YWtlLWhvdGxpbmUtdGVzdC1zZWNyZXQtMDAx"  # the example config's test value
T0 = datetime(2026, 12, 5, 1, 30, tzinfo=UTC)


def call_events(index: int, call_id: str) -> list[dict[str, Any]]:
    """A call's events in the order the PBX sends them: every fifth missed, every seventh
    with its `ended` ahead of its `answered` (the connector must not care)."""
    def at(seconds: int) -> str:
        return (T0 + timedelta(seconds=index * 10 + seconds)).isoformat()

    common = {"call_id": call_id, "from": f"139{index % 100_000_000:08d}", "to": "400-800-1234"}
    ringing = {"event": "call.ringing", "occurred_at": at(0), "agents": ["1001"], **common}
    if index % 5 == 0:
        return [ringing, {"event": "call.missed", "occurred_at": at(20), "cause": "no_answer",
                          **common}]
    answered = {"event": "call.answered", "occurred_at": at(5), "agent": "1001", **common}
    ended = {"event": "call.ended", "occurred_at": at(65), **common}
    return [ringing, ended, answered] if index % 7 == 3 else [ringing, answered, ended]


class CallLoadDriver(LoadDriver):
    """Calls through `POST /cti/hotline/events`; the keys are the calls' record keys."""

    def message_key(self, header_key: str) -> str:
        return f"telephony:{LINE}:{header_key}:record"

    async def submit(self, http: aiohttp.ClientSession, index: int) -> None:
        call_id = self.header_key(index)
        sub = self.start(call_id)
        rng = random.Random(index)
        url = f"{self.gateway[SERVICE].base}/cti/{LINE}/events"
        for step, event in enumerate(call_events(index, call_id)):
            ids = [f"{call_id}-{step}"]
            if index % 6 == 1 and step == 0:
                ids.append(f"{call_id}-{step}-resigned")  # the same event under a new id
            body = orjson.dumps(event)
            for webhook_id in ids:
                if not await self.deliver(sub, self._poster(http, url, webhook_id, body)):
                    return
            await asyncio.sleep(rng.uniform(0.05, 0.4))
        self.accept(sub)

    @staticmethod
    def _poster(http: aiohttp.ClientSession, url: str, webhook_id: str, body: bytes) -> Any:
        async def post() -> int:
            stamp = int(time.time())  # signed afresh on every try, as PBXs do
            async with http.post(url, data=body, timeout=aiohttp.ClientTimeout(total=10),
                                 headers={"Content-Type": "application/json",
                                          "webhook-id": webhook_id,
                                          "webhook-timestamp": str(stamp),
                                          "webhook-signature": sign(SECRET, webhook_id, stamp,
                                                                    body)}) as response:
                await response.read()
                return response.status
        return post


async def check_calls(driver: CallLoadDriver, database_url: str) -> tuple[Outcome, dict[str, int]]:
    """Lost: accepted calls without their record. Duplicated: more than one ticket message or
    one ticket per call (a progress message stored, a record twice), more tickets than calls;
    and the screen pops per call."""
    prefix = f"telephony:{LINE}:{driver.run_id}-"
    rows = await read_persisted(database_url, f"{prefix}%")
    per_call = Counter(key.removeprefix(f"telephony:{LINE}:").split(":", 1)[0]
                       for key, _, _ in rows)
    records = {key: persisted for key, _, persisted in rows if key.endswith(":record")}
    accepted = driver.accepted
    lost = sorted(set(accepted) - set(records))
    tickets_per_call: dict[str, set[str]] = {}
    for key, ticket, _ in rows:
        tickets_per_call.setdefault(key.split(":")[2], set()).add(str(ticket))
    tickets = await count_tickets(database_url)
    duplicated_tickets = (max(0, tickets - len(records))
                          + sum(len(t) - 1 for t in tickets_per_call.values()))
    pops = await count_pops(database_url, f"{driver.run_id}-%")
    latencies = sorted(persisted.timestamp() - accepted[key].started
                       for key, persisted in records.items() if key in accepted)
    p99 = latencies[int(0.99 * (len(latencies) - 1))] if latencies else 0.0
    outcome = Outcome(
        sent=driver.sent, accepted=len(accepted), persisted=len(records), lost=len(lost),
        duplicated_messages=sum(n - 1 for n in per_call.values() if n > 1),
        duplicated_tickets=duplicated_tickets, unexpected=len(set(records) - set(accepted)),
        longest_s=round(latencies[-1], 3) if latencies else 0.0, p99_s=round(p99, 3),
        lost_keys=lost)
    return outcome, pops


async def count_pops(database_url: str, like: str) -> dict[str, int]:
    """`call.ringing` events in the ticket core's log, per call id."""
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(text(
                "SELECT CAST(data AS jsonb) ->> 'call_id' AS call_id, count(*) FROM events"
                " WHERE type = 'call.ringing' AND CAST(data AS jsonb) ->> 'call_id' LIKE :like"
                " GROUP BY 1"), {"like": like})
            return {str(r[0]): int(r[1]) for r in rows}
    finally:
        await engine.dispose()


async def telephony_faults(lab: Lab, count: int, *, kills: int = 2,
                           down_s: float = 3.0) -> Result:
    """Calls while the connector is SIGKILLed (once with its broker link down, so its outbox
    holds progress) and the link drops: every accepted call is one record, one pop."""
    import uuid

    run_id = f"telephony{uuid.uuid4().hex[:6]}"
    database_url = await lab.postgres.create_database(f"chaos_{run_id}")
    workdir = lab.workdir / run_id
    workdir.mkdir(parents=True)
    proxy = BrokerProxy(target_port=lab.rabbit.port)
    await proxy.start()
    gateway = Gateway(workdir, lab.rabbit.url, database_url, prefix=f"chaos{run_id}",
                      services=(*SERVICES, SERVICE))
    gateway[SERVICE].env["INTAKE_AMQP_URL"] = proxy.url
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as http:
        await gateway.start(http)
        run = Run(lab, "telephony_faults", gateway, database_url, http, run_id)
        try:
            driver = CallLoadDriver(gateway, run_id, count, rate=lab.rate)
            load = _background(driver.run(http))
            faults = kills + 1
            for i in range(faults):
                await driver.reached((i + 1) / (faults + 1))
                if i == 1:  # the link drops; mid-outage the connector dies with its outbox
                    await proxy.stop()
                    run.fault("broker link cut")
                    await asyncio.sleep(down_s / 2)
                    await gateway.restart(http, SERVICE)
                    run.fault("SIGKILL telephony (link down), restarted")
                    await asyncio.sleep(down_s / 2)
                    await proxy.start()
                    run.fault("broker link back")
                else:
                    await gateway.restart(http, SERVICE)
                    run.fault("SIGKILL telephony, restarted")
            await load
            result = await run.finish(driver, f"calls through generic CTI webhooks, connector "
                                              f"SIGKILLed {kills + 1} times, broker link cut "
                                              f"for {down_s:.0f} s")
            # The harness's check counts by content markers a call record does not carry:
            # calls are counted by their keys instead.
            outcome, pops = await check_calls(driver, database_url)
            result.outcome = outcome
            doubled_pops = {c: n for c, n in pops.items() if n > 1}
            missing_pops = set(driver.submissions) - set(pops)
            if doubled_pops:
                result.problems.append(f"{len(doubled_pops)} calls popped more than once")
            accepted_calls = {s.key for s in driver.accepted.values()}
            if missing_pops & accepted_calls:
                result.problems.append(f"{len(missing_pops & accepted_calls)} accepted calls "
                                       "never popped")
            result.notes["pops"] = sum(pops.values())
            return result
        finally:
            print(f"   stopped in {await gateway.stop()}", flush=True)
            await proxy.stop()
