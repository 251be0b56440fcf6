"""Random agent-API call sequences never break the ticket invariants (issue 17), on SQLite and
PostgreSQL: a hypothesis state machine drives the real API in-process over one store (customer
messages on the persist path, new or threaded; status changes to any target; claim, queue next,
assignee, transfer, presence, notes, merge, escalations, the assigner, the test clock) and after
every step checks the database:

* each ticket has exactly one known status, and `merged` exactly when `merged_into` is set;
* at most one assignee, an existing agent;
* every agent's load as the assignment code computes it equals the count of their assigned
  tickets in the load statuses, per channel, and no automatic assignment (assigner, claim,
  queue next) took an agent over capacity;
* every event has its history row, and every change the API answered 2xx to left one;
* no call ever answers 5xx.

`FUZZ_N` scales the examples (as tests/fuzz does): `FUZZ_N=1000` runs ten times the default.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from sqlalchemy import func, select, text

from intake.config import load_document
from intake.message import Thread
from ticket_core.agents_db import AGENTS
from ticket_core.api import api_routes, auth_middleware
from ticket_core.assigner import Assigner
from ticket_core.assigning import loads
from ticket_core.assignment import capacity_on
from ticket_core.clock import TestClock
from ticket_core.db import make_engine
from ticket_core.history import NOT_HISTORY
from ticket_core.schemas import Status
from ticket_core.statements import EVENTS, HISTORY, TICKETS
from ticket_core.store import TicketStore
from ticket_core.tickets_config import load_tickets
from ticket_core.timers import Timelines

from .builders import message, route
from .test_agents import ADMIN, ADMIN_TOKEN, bearer

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "intake.example.yaml"
DOC = load_document(EXAMPLE)
T0 = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)  # a Monday, 10:00 in Shanghai
STATUSES = frozenset(Status.__args__)  # type: ignore[attr-defined]
# Examples per backend at the default FUZZ_N (100): 30 on SQLite, 15 on PostgreSQL, whose
# examples take twice as long (each empties the database), so the module stays near 30 s.
EXAMPLE_SCALE = {"sqlite": 0.3, "postgres": 0.15}


def examples(kind: str) -> int:
    return max(1, int(int(os.environ.get("FUZZ_N", "100")) * EXAMPLE_SCALE[kind]))
# (desk, skill group, category) of the customer messages: a least_loaded group, a claim group,
# and complaints (which escalations need).
ROUTES = [("aftersales", "sg_aftersales_l1", None), ("aftersales", "sg_aftersales_claim", None),
          ("complaints", "sg_hotline", "complaint")]
# name, role, desks, skill groups, webform capacity, online at the start
AGENTS_MADE = [
    ("li", "agent", ["aftersales"], ["sg_aftersales_l1", "sg_aftersales_claim"], 2, True),
    ("wu", "agent", ["aftersales"], ["sg_aftersales_l1"], 3, False),
    ("boss", "supervisor", ["aftersales", "complaints"],
     ["sg_hotline_supervisors", "sg_aftersales_claim"], 1, True),
    ("hotline", "agent", ["complaints"], ["sg_hotline", "sg_hotline_supervisors"], 1, True),
]
TARGET_STATUSES = ["new", "open", "pending", "on_hold", "resolved", "closed", "merged",
                   "reopened", "", 7]
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class Backend:
    """Where each example's fresh store lives: a copy of the migrated SQLite template, or the
    session's PostgreSQL database emptied (as conftest's `store` fixture does)."""

    def __init__(self, kind: str, source: str) -> None:
        self.kind, self.source = kind, source

    async def fresh_store(self, workdir: Path) -> TicketStore:
        if self.kind == "sqlite":
            target = workdir / "intake.sqlite3"
            shutil.copyfile(self.source, target)
            return TicketStore(make_engine(f"sqlite+aiosqlite:///{target}"))
        engine = make_engine(self.source)
        async with engine.begin() as connection:
            await connection.execute(text("SET LOCAL session_replication_role = replica"))
            await connection.execute(text(
                "TRUNCATE history, satisfaction_requests, quick_replies, notifications, "
                "api_tokens, agents, timers, calls, events, outbox, attachments, messages, "
                "tickets, search_documents, customer_identities, customers "
                "RESTART IDENTITY CASCADE"))
            await connection.execute(text("DELETE FROM counters"))
            await connection.execute(text(
                "INSERT INTO counters (name, value) VALUES ('ticket_number', 1000), "
                "('event_id', 0), ('events_relayed', 0)"))
        return TicketStore(engine)


BACKEND: Backend | None = None  # set by the test before the machine runs


class AgentApiMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        assert BACKEND is not None
        self.loop = asyncio.new_event_loop()
        self.workdir = Path(tempfile.mkdtemp(prefix="inv17-"))
        self.tickets: list[str] = []
        self.agents: dict[str, dict[str, Any]] = {}
        self.run(self._start(BACKEND))

    # ---- plumbing ----------------------------------------------------------------------------

    def run(self, work: Any) -> Any:
        return self.loop.run_until_complete(work)

    async def _start(self, backend: Backend) -> None:
        self.store = await backend.fresh_store(self.workdir)
        self.clock = TestClock(T0)
        self.store.clock, self.store.timelines = self.clock, Timelines.from_document(DOC)
        self.store.tickets = load_tickets(DOC)
        app = web.Application(middlewares=[auth_middleware(ADMIN_TOKEN, self.store)])
        app.add_routes(api_routes(self.store))
        self.client: TestClient[Any, Any] = TestClient(TestServer(app))
        await self.client.start_server()
        for name, role, desks, groups, capacity, online in AGENTS_MADE:
            made = await self._ok("POST", "/api/v1/agents", ADMIN, {
                "name": name, "email": f"{name}@shop.example", "role": role, "desks": desks,
                "skill_groups": groups, "capacity": {"webform": capacity}})
            token = await self._ok("POST", "/api/v1/tokens", ADMIN, {"agent_id": made["id"]})
            made["auth"] = bearer(token["token"])
            if online:
                await self._ok("PUT", f"/api/v1/agents/{made['id']}/presence", ADMIN,
                               {"status": "online"})
            self.agents[name] = made

    def teardown(self) -> None:
        async def stop() -> None:
            await self.client.close()
            await self.store.close()
            await self.store.engine.dispose()
        try:
            self.run(stop())
        finally:
            self.loop.close()
            shutil.rmtree(self.workdir, ignore_errors=True)

    async def _call(self, method: str, path: str, headers: dict[str, str],
                    body: Any = None) -> tuple[int, Any]:
        """One API call; a 5xx fails at once, a 2xx write on a ticket must leave history."""
        response = await self.client.request(method, path, headers=headers, json=body)
        answer = await response.json() if response.content_type == "application/json" else None
        assert response.status < 500, (method, path, body, response.status, answer)
        return response.status, answer

    async def _ok(self, method: str, path: str, headers: dict[str, str], body: Any) -> Any:
        status, answer = await self._call(method, path, headers, body)
        assert status < 300, (method, path, body, status, answer)
        return answer

    async def _history_count(self, ticket_id: str) -> int:
        async with self.store.engine.connect() as conn:
            return int((await conn.execute(select(func.count()).select_from(HISTORY).where(
                HISTORY.c.ticket_id == ticket_id))).scalar_one())

    async def _row(self, ticket_id: str) -> Any:
        async with self.store.engine.connect() as conn:
            return (await conn.execute(select(TICKETS).where(
                TICKETS.c.id == ticket_id))).one()

    async def _changing(self, method: str, path: str, headers: dict[str, str], body: Any,
                        ticket_id: str, *, always_changes: bool = False) -> tuple[int, Any]:
        """A write on `ticket_id`: when answered 2xx and the ticket changed (or the call
        always changes something, as a note does), its history grew."""
        before_rows, before = await self._history_count(ticket_id), await self._row(ticket_id)
        status, answer = await self._call(method, path, headers, body)
        if status < 300:
            after = await self._row(ticket_id)
            changed = always_changes or any(
                before._mapping[k] != after._mapping[k]
                for k in ("status", "assignee_id", "desk", "skill_group", "merged_into"))
            if changed:
                assert await self._history_count(ticket_id) > before_rows, (
                    method, path, body, "answered", status, "but left no history row")
        return status, answer

    def _agent(self, name: str) -> dict[str, Any]:
        return self.agents[name]

    # ---- rules: customers and the assigner ---------------------------------------------------

    @rule(which=st.integers(0, len(ROUTES) - 1), priority=st.sampled_from(
        ["low", "normal", "high", "urgent"]))
    def customer_writes_a_new_ticket(self, which: int, priority: str) -> None:
        desk, group, category = ROUTES[which]
        before = self.run(self._assignees())
        result = self.run(self.store.persist(message(routed=route(
            desk, skill_group=group, priority=priority, category=category),
            received_at=self.clock.now())))
        assert result.ticket_id is not None
        if result.ticket_id not in self.tickets:
            self.tickets.append(result.ticket_id)
        self.run(self._newly_assigned_within_capacity(before, "a new ticket"))

    @precondition(lambda self: self.tickets)
    @rule(data=st.data())
    def customer_writes_again_on_a_ticket(self, data: st.DataObject) -> None:
        ticket_id = data.draw(st.sampled_from(self.tickets))
        number = self.run(self._row(ticket_id)).number
        before = self.run(self._assignees())
        result = self.run(self.store.persist(message(
            thread=Thread(ticket_number=str(number)), received_at=self.clock.now(),
            text=data.draw(st.sampled_from(["还没有到", "谢谢", "auto"])))))
        assert result.ticket_id is not None
        if result.ticket_id not in self.tickets:  # a follow-up of a closed ticket, say
            self.tickets.append(result.ticket_id)
        self.run(self._newly_assigned_within_capacity(before, "a customer's message"))

    @rule()
    def assigner_runs(self) -> None:
        async def work() -> None:
            while await Assigner(self.store).run_once():
                pass
        before = self.run(self._assignees())
        self.run(work())
        self.run(self._newly_assigned_within_capacity(before, "the assigner"))

    # ---- rules: the agent API ----------------------------------------------------------------

    @precondition(lambda self: self.tickets)
    @rule(data=st.data(), wanted=st.sampled_from(TARGET_STATUSES),
          who=st.sampled_from(["li", "wu", "boss", "hotline", None]))
    def patch_status(self, data: st.DataObject, wanted: Any, who: str | None) -> None:
        ticket_id = data.draw(st.sampled_from(self.tickets))
        headers = ADMIN if who is None else self._agent(who)["auth"]
        before = self.run(self._row(ticket_id)).status
        status, answer = self.run(self._changing(
            "PATCH", f"/api/v1/tickets/{ticket_id}", headers, {"status": wanted}, ticket_id))
        if status == 200:
            assert wanted in STATUSES and answer["status"] == wanted
        if wanted not in STATUSES:
            assert status in (403, 404, 422), (wanted, status, answer)
        if before in ("closed", "merged") and wanted != before:
            assert status != 200, (before, wanted, answer)

    @precondition(lambda self: self.tickets)
    @rule(data=st.data(), who=st.sampled_from(["li", "wu", "boss", "hotline"]))
    def claim(self, data: st.DataObject, who: str) -> None:
        ticket_id = data.draw(st.sampled_from(self.tickets))
        agent = self._agent(who)
        before = self.run(self._row(ticket_id)).assignee_id
        status, _ = self.run(self._changing(
            "POST", f"/api/v1/tickets/{ticket_id}/claim", agent["auth"], None, ticket_id))
        if status == 200:
            assert self.run(self._row(ticket_id)).assignee_id == agent["id"]
            if before != agent["id"]:
                self.run(self._within_capacity(agent["id"], "a claim"))

    @rule(group=st.sampled_from(["sg_aftersales_l1", "sg_aftersales_claim", "sg_hotline",
                                 "sg_nowhere"]),
          who=st.sampled_from(["li", "wu", "boss", "hotline"]))
    def queue_next(self, group: str, who: str) -> None:
        agent = self._agent(who)
        status, answer = self.run(self._call(
            "POST", f"/api/v1/queues/{group}/next", agent["auth"]))
        if status == 200:
            assert answer["assignee_id"] == agent["id"]
            assert self.run(self._history_count(answer["id"])) > 0
            self.run(self._within_capacity(agent["id"], "queue next"))

    @precondition(lambda self: self.tickets)
    @rule(data=st.data(), to=st.sampled_from(["li", "wu", "boss", "hotline", None]),
          who=st.sampled_from(["li", "boss", None]))
    def put_assignee(self, data: st.DataObject, to: str | None, who: str | None) -> None:
        ticket_id = data.draw(st.sampled_from(self.tickets))
        headers = ADMIN if who is None else self._agent(who)["auth"]
        agent_id = None if to is None else self._agent(to)["id"]
        status, _ = self.run(self._changing(
            "PUT", f"/api/v1/tickets/{ticket_id}/assignee", headers, {"agent_id": agent_id},
            ticket_id))
        if status == 200:
            now_held = self.run(self._row(ticket_id)).assignee_id
            if agent_id is not None:
                assert now_held == agent_id
            elif now_held is not None:  # back in its queue, its group's strategy took it
                self.run(self._within_capacity(now_held, "the assigner after an unassign"))

    @precondition(lambda self: self.tickets)
    @rule(data=st.data(), to=st.sampled_from([
        {"agent_id": "wu"}, {"agent_id": "hotline"}, {"skill_group": "sg_aftersales_claim"},
        {"skill_group": "sg_hotline"}, {"desk": "aftersales"}, {"desk": "complaints"}]),
        note=st.sampled_from(["转售后二线", " "]), who=st.sampled_from(["li", "boss", None]))
    def transfer(self, data: st.DataObject, to: dict[str, str], note: str,
                 who: str | None) -> None:
        ticket_id = data.draw(st.sampled_from(self.tickets))
        headers = ADMIN if who is None else self._agent(who)["auth"]
        to_agent = "agent_id" in to
        if to_agent:
            to = {"agent_id": self._agent(to["agent_id"])["id"]}
        before = self.run(self._assignees())
        status, _ = self.run(self._changing(
            "POST", f"/api/v1/tickets/{ticket_id}/transfer", headers, {"to": to, "note": note},
            ticket_id, always_changes=True))
        if not note.strip():
            assert status != 200
        if status == 200 and not to_agent:  # to a group or desk: its strategy assigns
            self.run(self._newly_assigned_within_capacity(before, "a transfer to a group"))

    @rule(who=st.sampled_from(["li", "wu", "boss", "hotline"]),
          presence=st.sampled_from(["online", "away", "offline"]))
    def presence(self, who: str, presence: str) -> None:
        agent = self._agent(who)
        self.run(self._ok("PUT", f"/api/v1/agents/{agent['id']}/presence", agent["auth"],
                          {"status": presence}))

    @precondition(lambda self: self.tickets)
    @rule(data=st.data(), who=st.sampled_from(["li", "boss", "hotline", None]))
    def note(self, data: st.DataObject, who: str | None) -> None:
        ticket_id = data.draw(st.sampled_from(self.tickets))
        headers = ADMIN if who is None else self._agent(who)["auth"]
        self.run(self._changing("POST", f"/api/v1/tickets/{ticket_id}/notes", headers,
                                {"text": "客户来电催促"}, ticket_id, always_changes=True))

    @precondition(lambda self: len(self.tickets) >= 2)
    @rule(data=st.data(), who=st.sampled_from(["li", "boss", None]))
    def merge(self, data: st.DataObject, who: str | None) -> None:
        target, source = data.draw(st.lists(st.sampled_from(self.tickets), min_size=2,
                                            max_size=2))
        headers = ADMIN if who is None else self._agent(who)["auth"]
        before = self.run(self._history_count(source))
        status, _ = self.run(self._changing(
            "POST", f"/api/v1/tickets/{target}/merge", headers,
            {"source_ids": [source], "note": "同一问题"}, target))
        if status == 200:
            assert target != source
            row = self.run(self._row(source))
            assert row.status == "merged" and row.merged_into == target
            assert self.run(self._history_count(source)) > before

    @precondition(lambda self: self.tickets)
    @rule(data=st.data(), who=st.sampled_from(["boss", "li", None]))
    def raise_escalation(self, data: st.DataObject, who: str | None) -> None:
        ticket_id = data.draw(st.sampled_from(self.tickets))
        headers = ADMIN if who is None else self._agent(who)["auth"]
        self.run(self._changing(
            "POST", f"/api/v1/tickets/{ticket_id}/escalations", headers,
            {"timeline": "warned_complaint", "note": "客户称将找媒体曝光"}, ticket_id,
            always_changes=False))

    @precondition(lambda self: self.tickets)
    @rule(data=st.data(), who=st.sampled_from(["boss", "hotline", "li", None]))
    def advance_escalation(self, data: st.DataObject, who: str | None) -> None:
        ticket_id = data.draw(st.sampled_from(self.tickets))
        headers = ADMIN if who is None else self._agent(who)["auth"]
        self.run(self._changing(
            "POST", f"/api/v1/tickets/{ticket_id}/escalations/warned_complaint/advance",
            headers, {"note": "已处理"}, ticket_id))

    @rule(advance=st.sampled_from(["PT10M", "PT45M", "PT4H", "P2D", "P8D"]))
    def advance_the_clock(self, advance: str) -> None:
        self.run(self._ok("POST", "/api/v1/test-clock", ADMIN, {"advance": advance}))

    # ---- invariants --------------------------------------------------------------------------

    async def _assignees(self) -> dict[str, Any]:
        async with self.store.engine.connect() as conn:
            rows = (await conn.execute(select(TICKETS.c.id, TICKETS.c.assignee_id))).all()
        return {row.id: row.assignee_id for row in rows}

    async def _newly_assigned_within_capacity(self, before: dict[str, Any], how: str) -> None:
        """Every ticket given to an agent since `before` (a snapshot of `_assignees`) left
        that agent within capacity."""
        for ticket_id, agent_id in (await self._assignees()).items():
            if agent_id is not None and before.get(ticket_id) != agent_id:
                await self._within_capacity(agent_id, how)

    async def _within_capacity(self, agent_id: str, how: str) -> None:
        statuses = list(self.store.tickets.load_statuses)
        async with self.store.engine.connect() as conn:
            agent = (await conn.execute(select(AGENTS).where(AGENTS.c.id == agent_id))).one()
            load = await conn.run_sync(lambda c: loads(c, [agent_id], statuses))
        for (_, channel), count in load.items():
            room = min((c for c in (capacity_on(channel, agent.capacity or {},
                                                self.store.timelines.capacities.get(g, {}))
                                    for g in agent.skill_groups) if c is not None),
                       default=None)
            assert room is None or count <= room, (how, agent.name, channel, count, room)

    @invariant()
    def the_database_holds_its_invariants(self) -> None:
        self.run(self._check())

    async def _check(self) -> None:
        statuses = list(self.store.tickets.load_statuses)
        async with self.store.engine.connect() as conn:
            tickets = (await conn.execute(select(
                TICKETS.c.id, TICKETS.c.status, TICKETS.c.merged_into, TICKETS.c.assignee_id,
                TICKETS.c.channel))).all()
            agent_ids = set((await conn.execute(select(AGENTS.c.id))).scalars())
            load = await conn.run_sync(lambda c: loads(c, agent_ids, statuses))
            events = (await conn.execute(select(EVENTS.c.id, EVENTS.c.type).where(
                EVENTS.c.ticket_id.is_not(None)))).all()
            history_ids = set((await conn.execute(select(HISTORY.c.id))).scalars())
        counted: Counter[tuple[str, str]] = Counter()
        for ticket in tickets:
            assert ticket.status in STATUSES, ticket
            assert (ticket.status == "merged") == (ticket.merged_into is not None), ticket
            assert ticket.assignee_id is None or ticket.assignee_id in agent_ids, ticket
            if ticket.assignee_id is not None and ticket.status in statuses:
                counted[(ticket.assignee_id, ticket.channel)] += 1
        assert {k: v for k, v in load.items() if v} == dict(counted)
        missing = [(e.id, e.type) for e in events
                   if e.type not in NOT_HISTORY and e.id not in history_ids]
        assert not missing, f"events without their history row: {missing}"


def _backend(request: pytest.FixtureRequest, kind: str) -> Backend:
    if kind == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        return Backend("sqlite", str(template))
    return Backend("postgres", request.getfixturevalue("pg_url"))


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres",
                                                         marks=pytest.mark.postgres)])
def test_random_api_sequences_keep_the_invariants(request: pytest.FixtureRequest,
                                                  kind: str) -> None:
    global BACKEND
    BACKEND = _backend(request, kind)
    try:
        AgentApiMachine.TestCase.settings = settings(
            max_examples=examples(kind), stateful_step_count=15, deadline=None,
            suppress_health_check=list(HealthCheck))
        AgentApiMachine.TestCase().runTest()
    finally:
        BACKEND = None

