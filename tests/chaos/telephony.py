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

With `pbx_calls`, a live fake Asterisk and a live fake FreeSWITCH (telephony_pbx.py) play
that many calls each on the example config's `asterisk-lab` and `freeswitch-lab` lines, on
their own clock: calls go on while the PBX link is cut and while the connector is dead, and
reconciliation after each reconnect must still make each call one record, with the end the
connector could know (telephony_pbx.py's `answer_seen`, `end_seen`).
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
from .telephony_pbx import REPO_CONFIG, LiveAmi, LiveEsl, LivePbx, pbx_config, wait_for_records

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


async def check_calls(driver: CallLoadDriver, database_url: str, *,
                      other_lines: tuple[str, ...] = ()) -> tuple[Outcome, dict[str, int]]:
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
    # The live PBXs' calls have tickets of their own, counted apart in one statement (a
    # late record of theirs must not pass for a doubled ticket here).
    tickets = (await count_tickets_apart(database_url, other_lines) if other_lines
               else await count_tickets(database_url))
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
                           down_s: float = 3.0, pbx_calls: int = 0) -> Result:
    """Calls while the connector is SIGKILLed (once with its broker link down, so its outbox
    holds progress) and the link drops: every accepted call is one record, one pop. With
    `pbx_calls`, calls over AMI and ESL links too, whose PBXs also cut the link once."""
    import uuid

    run_id = f"telephony{uuid.uuid4().hex[:6]}"
    database_url = await lab.postgres.create_database(f"chaos_{run_id}")
    workdir = lab.workdir / run_id
    workdir.mkdir(parents=True)
    proxy = BrokerProxy(target_port=lab.rabbit.port)
    await proxy.start()
    pbxs: list[LivePbx] = [LiveAmi(run_id, seed=15), LiveEsl(run_id, seed=16)] \
        if pbx_calls else []
    env: dict[str, str] = {}
    for pbx in pbxs:
        await pbx.start()
    if pbxs:
        config = workdir / "intake.yaml"
        config.write_text(pbx_config(REPO_CONFIG.read_text(), pbxs))
        env["INTAKE_CONFIG"] = str(config)
    gateway = Gateway(workdir, lab.rabbit.url, database_url, prefix=f"chaos{run_id}",
                      services=(*SERVICES, SERVICE), env=env)
    gateway[SERVICE].env["INTAKE_AMQP_URL"] = proxy.url
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as http:
        await gateway.start(http)
        run = Run(lab, "telephony_faults", gateway, database_url, http, run_id)
        try:
            driver = CallLoadDriver(gateway, run_id, count, rate=lab.rate)
            load = _background(driver.run(http))
            # The PBXs' calls span the generic load (count / rate seconds).
            every_s = count / max(lab.rate or 6.0, 0.1) / max(pbx_calls, 1) * 0.8
            plays = [_background(pbx.play(pbx_calls, every_s)) for pbx in pbxs]
            faults = kills + 1
            for i in range(faults):
                await driver.reached((i + 1) / (faults + 1))
                if i == 0 and pbxs:  # the PBXs cut their links, the connector stays up
                    for pbx in pbxs:
                        pbx.drop(down_s)
                    run.fault(f"PBX links cut for {down_s:.0f} s")
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
            for play in plays:
                await play
            await wait_for_records(pbxs, database_url)
            result = await run.finish(driver, f"calls through generic CTI webhooks, connector "
                                              f"SIGKILLed {kills + 1} times, broker link cut "
                                              f"for {down_s:.0f} s")
            # The harness's check counts by content markers a call record does not carry:
            # calls are counted by their keys instead.
            outcome, pops = await check_calls(driver, database_url,
                                              other_lines=tuple(pbx.line for pbx in pbxs))
            result.outcome = outcome
            for pbx in pbxs:
                await check_pbx_calls(pbx, database_url, result)
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
            for pbx in pbxs:
                await pbx.stop()


async def check_pbx_calls(pbx: LivePbx, database_url: str, result: Result) -> None:
    """Each call the PBX played: one record (and no other stored message), one pop; the
    record answered only by the agent who answered, answered when the connector could know
    it, ended at the PBX's hangup with its cause when the connector could see it."""
    records = await read_calls(database_url, f"telephony:{pbx.line}:{pbx.run_id}-%")
    per_call = Counter(key.split(":")[2] for key in records)
    calls = {call.call_id: call for call in pbx.calls}
    pops = await count_pops(database_url, f"{pbx.run_id}-{pbx.kind}-%")
    problems: Counter[str] = Counter()
    unseen_answers = inferred_ends = unseen_calls = 0
    for call_id, call in calls.items():
        record = records.get(f"telephony:{pbx.line}:{call_id}:record")
        if record is None:
            if pbx.call_seen(call):
                problems["lost"] += 1
            else:
                unseen_calls += 1
            continue
        if per_call[call_id] > 1:
            problems["more than one stored message"] += 1
        if pops.get(call_id, 0) != 1:
            problems[f"{pops.get(call_id, 0)} pops"] += 1
        answered = call.answered_at is not None
        if record["state"] == "completed" and (not answered or record["agent"] != call.agent):
            problems["answered by nobody or another agent"] += 1
        if pbx.answer_seen(call) and record["state"] != "completed":
            problems["an answer seen but recorded missed"] += 1
        unseen_answers += answered and record["state"] != "completed"
        ended = datetime.fromisoformat(record["ended_at"]).timestamp()
        if pbx.end_seen(call) and (record["end_reason"] != pbx.cause
                                   or abs(ended - call.ended_at) > 0.001):
            problems["a hangup seen but another end recorded"] += 1
        inferred_ends += record["end_reason"] == "gone_after_reconnect"
    unexpected = sum(1 for key in records if key.split(":")[2] not in calls)
    if unexpected:
        problems["records of calls the PBX never had"] += unexpected
    for problem, n in problems.items():
        result.problems.append(f"{pbx.line}: {n} calls: {problem}")
    result.notes[pbx.line] = {
        "calls": len(calls), "records": sum(k.endswith(":record") for k in records),
        "answered": sum(c.answered_at is not None for c in calls.values()),
        "calls_not_seen": unseen_calls,
        "answers_not_seen": unseen_answers, "ended_after_reconnect": inferred_ends,
        "sessions": len(pbx.sessions), "link_cuts": pbx.drops}


async def count_tickets_apart(database_url: str, lines: tuple[str, ...]) -> int:
    """Tickets with no message from these lines."""
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            likes = " OR ".join(f"idempotency_key LIKE :l{i}" for i in range(len(lines)))
            return int((await conn.execute(text(
                "SELECT count(*) FROM tickets WHERE id NOT IN (SELECT ticket_id FROM messages"
                f" WHERE ticket_id IS NOT NULL AND ({likes}))"),
                {f"l{i}": f"telephony:{line}:%" for i, line in enumerate(lines)})).scalar_one())
    finally:
        await engine.dispose()


async def read_calls(database_url: str, like: str) -> dict[str, dict[str, Any]]:
    """The stored messages' `call` objects by idempotency key."""
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(text(
                "SELECT idempotency_key, call FROM messages WHERE idempotency_key LIKE :like"),
                {"like": like})
            return {str(r[0]): r[1] if isinstance(r[1], dict) else orjson.loads(r[1] or "{}")
                    for r in rows}
    finally:
        await engine.dispose()
