"""The ticket core's durable timers (issue 16): 10,000 overflow timers due within one second,
all fired by the scheduler, each once.

Tickets are persisted through the store as the router's decisions make them (a primary desk, an
overflow delivery due within the second, SLA due times later), on a database of their own of
the run's kind (`DB=sqlite|postgres`). The clock is then moved one second on and the scheduler
runs its rounds until nothing is due: the figure is how long that takes (target: within 10 s),
and the check is that every timer fired once and moved its ticket once.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select

from bench.gateway import Database
from bench.result import Context, Result, Scenario
from intake.message import Identity, Message, RouteDecision, RouteDelivery, Sender, Sla
from ticket_core.clock import ManualClock
from ticket_core.db import make_engine, migrate
from ticket_core.scheduler import Scheduler
from ticket_core.statements import EVENTS, TIMERS
from ticket_core.store import TicketStore

BATCH = 200  # tickets persisted per transaction while filling


def overflowing(i: int, n: int, received: datetime) -> Message:
    """A complaint whose overflow to the regional desk is due `i / n` seconds after receipt."""
    decision = RouteDecision(
        decision_id=uuid.uuid4().hex, revision="0" * 64, route="store_complaint",
        mode="primary_secondary",
        deliveries=[RouteDelivery(desk="store_sh", skill_group="store_sh_service",
                                  role="primary"),
                    RouteDelivery(desk="regional", role="overflow", after="10m",
                                  due=received + timedelta(seconds=i / n))],
        priority="high", category="complaint", tags=["complaint"],
        sla=Sla(policy="complaint_simple",
                first_response_due=received + timedelta(minutes=30),
                resolution_due=received + timedelta(hours=2)))
    return Message(
        idempotency_key=f"webform:contact:timer-{i}", channel="webform", account="contact",
        kind="form_submission",
        sender=Sender(name=f"客户 {i}", identities=[
            Identity(kind="email", value=f"timer{i}@shop.example")]),
        subject="门店投诉", text="店员态度差", received_at=received, route=decision)


class Timers(Scenario):
    name = "timers"
    order = 25
    needs_gateway = False

    async def run(self, ctx: Context) -> list[Result]:
        n = ctx.n(10_000, 500)
        with tempfile.TemporaryDirectory() as tmp:
            database = await Database.create(ctx.options.db, Path(tmp), f"timers_{ctx.run_id}")
            try:
                return [await self.measure(ctx, database, n)]
            finally:
                await database.drop()

    async def measure(self, ctx: Context, database: Database, n: int) -> Result:
        await migrate(database.url)
        clock = ManualClock()
        store = TicketStore(make_engine(database.url), clock=clock)
        try:
            t0 = clock.now()
            for start in range(0, n, BATCH):
                await store.persist_many([overflowing(i, n, t0)
                                          for i in range(start, min(n, start + BATCH))])
            ctx.log(f"timers: {n} overflow timers due within a second, on {database.kind}")
            clock.set(t0 + timedelta(seconds=1))
            scheduler = Scheduler(store)
            started = time.perf_counter()
            rounds = 0
            while await scheduler.run_once():
                rounds += 1
            took = time.perf_counter() - started
            async with store.engine.connect() as connection:
                fired = (await connection.execute(select(func.count()).select_from(TIMERS).where(
                    TIMERS.c.kind == "overflow", TIMERS.c.state == "fired"))).scalar_one()
                moved = (await connection.execute(select(func.count()).select_from(EVENTS).where(
                    EVENTS.c.type == "ticket.transferred"))).scalar_one()
        finally:
            await store.engine.dispose()
        ok = fired == n and moved == n and scheduler.fired == n
        ctx.log(f"timers: {scheduler.fired} fired in {took:.2f} s ({rounds} rounds); "
                f"rows fired {fired}, tickets moved {moved}")
        result = Result(scenario=self.name, messages=n, load=f"due within 1 s, {database.kind}",
                        throughput=round(n / took, 1) if took > 0 else None,
                        extra={"seconds": round(took, 2), "rounds": rounds,
                               "fired": fired, "moved": moved,
                               "target": "10,000 due in one second all fire within 10 s, "
                                         "each once"})
        if not ok:
            result.ok = False
            result.failure = (f"expected {n} timers fired once and {n} tickets moved; got "
                              f"{scheduler.fired} fired, {fired} rows, {moved} moves")
        return result


SCENARIOS = [Timers()]
