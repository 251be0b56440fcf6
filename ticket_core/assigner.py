"""The assigner: a task of the ticket core that hands waiting tickets of `round_robin` and
`least_loaded` groups to agents, beside the persist path rather than in it.

It wakes after every commit of this process (`store.changes`: a persisted batch, a status
change, a presence or capacity change) and at least every `poll_s` (another replica's
commits), reads whether anything waits in an automatic group (one cheap read), and if so runs
`assigning.assign_waiting` in one write transaction. A round that assigns nothing is rolled
back, so it signals no change and does not wake itself. So a form post's ticket is assigned
within a batch and a round of being persisted, and freed capacity goes to the longest waiting
ticket at the next round.
"""

from __future__ import annotations

import asyncio
import random
import time

from sqlalchemy import select
from sqlalchemy.engine import Connection

from intake.logging import get_logger

from .agents_db import AGENTS
from .assigning import assign_waiting, has_waiting_query
from .first_contact import notify_customer_messages, pending_query
from .store import TicketStore

POLL_S = 0.5
MAX_BACKOFF_S = 5.0

log = get_logger(component="assigner")


class _NothingAssigned(Exception):
    """Rolls back a round that assigned nothing: no commit, no `changes` signal."""


class Assigner:
    def __init__(self, store: TicketStore, *, poll_s: float = POLL_S) -> None:
        self.store = store
        self.poll_s = poll_s
        self.assigned = 0
        self.failing_since: float | None = None
        # The last round wrote nothing (tickets wait, nobody can take them): the next waits
        # `poll_s` rather than run after every persisted batch (the web form's hot loop).
        self.idle = False

    def _load_statuses(self) -> list[str]:
        return list(self.store.tickets.load_statuses)

    async def tell_first_contacts(self) -> None:
        """First-contact agents hear of their tickets' customer messages (first_contact.py)."""
        async with self.store._reading() as conn:
            seen, last = (await conn.execute(pending_query())).one()
        if seen is not None and seen == (last or 0):
            return
        now = self.store.clock.now()
        await self.store.write(lambda c: notify_customer_messages(c, now))

    async def run_once(self) -> int:
        """One round: the number of tickets assigned."""
        timelines, statuses = self.store.timelines, self._load_statuses()
        self.idle = False
        async with self.store._reading() as conn:
            found = (await conn.execute(has_waiting_query(timelines, statuses))).first()
            online = found is not None and (await conn.execute(
                select(AGENTS.c.id).where(AGENTS.c.presence == "online").limit(1))).first()
        if found is None or not online:
            return 0
        now = self.store.clock.now()

        def work(connection: Connection) -> int:
            count = assign_waiting(connection, now, timelines, statuses)
            if count == 0:
                raise _NothingAssigned
            return count

        try:
            count: int = await self.store.write(work)
        except _NothingAssigned:
            self.idle = True
            return 0
        self.assigned += count
        log.info("tickets_assigned", count=count)
        return count

    async def run(self) -> None:
        """Until cancelled; survives any error (logged once as it goes, once when back)."""
        delay = 0.2
        while True:
            token = self.store.changes.token()
            try:
                await self.run_once()
                await self.tell_first_contacts()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.failing_since is None:
                    self.failing_since = time.monotonic()
                    log.warning("assigner_failed", error=repr(exc)[:500])
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, MAX_BACKOFF_S)
                continue
            if self.failing_since is not None:
                log.info("assigner_recovered",
                         seconds=round(time.monotonic() - self.failing_since, 1))
                self.failing_since = None
            delay = 0.2
            if self.idle:
                await asyncio.sleep(self.poll_s)
            else:
                await self.store.changes.wait(token, self.poll_s)
