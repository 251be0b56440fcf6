"""kill -9 of a ticket-core process between scheduling and firing: after the restart each timer
fires once, those fired before the kill not again."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select

from ticket_core.clock import SystemClock
from ticket_core.db import migrate
from ticket_core.events import EVENTS
from ticket_core.scheduler import Scheduler
from ticket_core.statements import TIMERS
from ticket_core.store import TicketStore

REPO = Path(__file__).resolve().parents[2]
# A ticket-core process in miniature: the real store and scheduler on the system clock. It
# plans two tickets whose overflow falls due 1.5 s and 6 s from now, then runs its scheduler.
PROCESS = """
import asyncio, sys
from datetime import timedelta
from ticket_core.clock import SystemClock
from ticket_core.db import make_engine
from ticket_core.scheduler import Scheduler
from ticket_core.store import TicketStore
from ticket_core.tests.builders import message, timed_route

async def main(url):
    store = TicketStore(make_engine(url), clock=SystemClock())
    now = store.clock.now()
    for key, due in (("soon", 1.5), ("later", 6.0)):
        received = now - timedelta(minutes=10)
        await store.persist(message(key, received_at=received, routed=timed_route(
            received, overflow_after=timedelta(minutes=10, seconds=due))))
    print("planned", flush=True)
    await Scheduler(store, poll_s=0.1).run()

asyncio.run(main(sys.argv[1]))
"""


async def transfers(store: TicketStore) -> list[str]:
    async with store.engine.connect() as conn:
        rows = (await conn.execute(select(EVENTS.c.data).where(
            EVENTS.c.type == "ticket.transferred").order_by(EVENTS.c.id))).all()
    return [row.data["ticket_number"] for row in rows]


async def until(condition: object, timeout: float) -> None:
    for _ in range(int(timeout / 0.05)):
        if await condition():  # type: ignore[operator]
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {timeout} s")


async def test_a_timer_due_after_a_kill_9_fires_once_after_the_restart(
        store: TicketStore, database_url: str) -> None:
    await migrate(database_url)
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PROCESS, database_url, cwd=REPO, stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), 60)
        assert line.decode().strip() == "planned"
        # The first timer fires in the child; then it dies before the second is due.
        await until(lambda: _count(store, 1), 20)
    finally:
        child.send_signal(signal.SIGKILL)
        await asyncio.wait_for(child.wait(), 10)
    async with store.engine.connect() as conn:
        pending = (await conn.execute(select(TIMERS.c.due_at).where(
            TIMERS.c.kind == "overflow", TIMERS.c.state == "pending"))).scalars().all()
    assert len(pending) == 1

    # The restarted process: its scheduler fires what is due, once.
    store.clock = SystemClock()
    scheduler = Scheduler(store, poll_s=0.1)
    task = asyncio.create_task(scheduler.run())
    try:
        await until(lambda: _count(store, 2), 20)
        await asyncio.sleep(0.5)  # a double firing would show by now
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    numbers = await transfers(store)
    assert len(numbers) == 2 and len(set(numbers)) == 2
    assert scheduler.fired == 1
    assert store.clock.now() - pending[0] < timedelta(seconds=5)


async def _count(store: TicketStore, wanted: int) -> bool:
    return len(await transfers(store)) >= wanted
