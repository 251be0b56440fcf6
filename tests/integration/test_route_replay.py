"""`intake route replay` over what a real ticket core stored: 1,000 messages decided by the
example rules, persisted with their decisions, replayed through `GET /api/v1/decisions`."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from intake.config import load_document
from intake.message import Form, Identity, Message, Sender
from router.load import analyse
from router.replay import replay, stored_decisions
from router.rules import RuleSet
from tests.factories import utcnow
from ticket_core.api import api_routes, auth_middleware
from ticket_core.db import make_engine, migrate
from ticket_core.store import TicketStore

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "intake.example.yaml"
TOKEN = "replay-token"
TEXTS = ["我要投诉你们门店的服务", "请问什么时候发货", "我要退款，订单已签收", "建议增加夜间客服",
         "发票怎么开", "包裹破损了", "hello, where is my order?", "差评！"]
TOPICS = ["complaint", "enquiry", "after_sales", "suggestion", None]


def rules_of(path: Path, text: str | None = None) -> RuleSet:
    if text is not None:
        path.write_text(text, encoding="utf-8")
    # As `intake route replay` loads them: a candidate's inline tests may still expect the
    # old desks, which is what replay is for.
    rules = analyse(load_document(path), path.read_bytes(), lint=False, run_tests=False).rules
    assert rules is not None
    return rules


def traffic(n: int) -> list[Message]:
    messages = []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        messages.append(Message(
            idempotency_key=f"webform:contact:replay-{i}", channel="webform",
            account="contact", kind="form_submission",
            sender=Sender(name=f"客户 {i}", identities=[
                Identity(kind="email", value=f"c{i % 97}@shop.example")]),
            subject=f"问题 {i}", text=TEXTS[i % len(TEXTS)], received_at=utcnow(),
            form=Form(form_id="contact", fields={"topic": topic} if topic else {})))
    return messages


@pytest.fixture
async def ticket_core(tmp_path: Path, aiohttp_server: Callable[..., Awaitable[TestServer]]
                      ) -> AsyncIterator[tuple[str, TicketStore]]:
    url = f"sqlite+aiosqlite:///{tmp_path}/intake.sqlite3"
    await migrate(url)
    store = TicketStore(make_engine(url))
    app = web.Application(middlewares=[auth_middleware(TOKEN)])
    app.router.add_routes(api_routes(store))
    server = await aiohttp_server(app)
    yield str(server.make_url("")), store
    await store.engine.dispose()


async def collect(base: str, since: str = "2000-01-01T00:00:00Z") -> list[dict[str, Any]]:
    return [item async for item in stored_decisions(base, TOKEN, since, page_size=300)]


async def test_the_same_rules_replay_to_no_change_and_a_candidate_shows_its_shift(
        ticket_core: tuple[str, TicketStore], tmp_path: Path) -> None:
    base, store = ticket_core
    rules = rules_of(EXAMPLE)
    routed = [m.model_copy(update={"route": rules.decide(m, None, lookup="miss")})
              for m in traffic(1000)]
    for start in range(0, len(routed), 200):
        await store.persist_many(routed[start:start + 200])
    items = await collect(base)
    assert len(items) == 1000  # four pages of 300, by cursor
    assert len({item["message_id"] for item in items}) == 1000

    same = replay(items, rules, rules)
    assert (same["replayed"], same["changed"], same["unchanged_recorded_mismatch"]) == (
        1000, 0, 0)
    assert same["by_route"] == {} and same["desk_shift"] == {}

    # The candidate sends complaints to after-sales instead of the complaints desk.
    route = "    when: \"form.fields.topic == 'complaint' or text matches '投诉|差评|举报|骗子'\"\n"
    candidate_text = EXAMPLE.read_text(encoding="utf-8").replace(
        route + "    desk: complaints\n    skill_group: sg_hotline\n",
        route + "    desk: aftersales\n", 1)
    assert candidate_text != EXAMPLE.read_text(encoding="utf-8")
    candidate = rules_of(tmp_path / "candidate.yaml", candidate_text)
    moved = replay(items, rules, candidate)
    complaints = sum(1 for m in routed if m.route and m.route.route == "complaints")
    assert complaints and moved["changed"] == complaints
    assert moved["unchanged_recorded_mismatch"] == 0
    assert moved["desk_shift"] == {"aftersales": complaints, "complaints": -complaints}
    assert moved["by_route"] == {"complaints→complaints": complaints}
    assert len(moved["changes"]) == min(complaints, 100)

    # Recorded decisions the old rules no longer reproduce are counted, not hidden.
    drifted = replay(items, candidate, candidate)
    assert drifted["changed"] == 0 and drifted["unchanged_recorded_mismatch"] == complaints


async def test_the_command_prints_the_report(ticket_core: tuple[str, TicketStore],
                                             tmp_path: Path) -> None:
    base, store = ticket_core
    rules = rules_of(EXAMPLE)
    await store.persist_many([m.model_copy(update={"route": rules.decide(m, None, lookup="miss")})
                              for m in traffic(50)])
    env = {**os.environ, "INTAKE_TICKET_CORE_URL": base, "INTAKE_API_TOKEN": TOKEN,
           "INTAKE_CONFIG": str(EXAMPLE)}
    env.pop("INTAKE_RULES", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "intake.cli", "route", "replay", "--rules", str(EXAMPLE),
        "--since", "2000-01-01T00:00:00Z", "--format", "json", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    report = json.loads(out)
    assert (report["replayed"], report["changed"], report["unchanged_recorded_mismatch"]) == (
        50, 0, 0)
    assert "store_complaint" in report["never_hit"]
