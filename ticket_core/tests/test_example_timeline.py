"""The example that ships, decided by the real rules: a store complaint nobody acknowledges
moves to the regional desk, then to the hotline, across a restart; one acknowledged stays."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from intake.config import load_document
from intake.message import Message
from router.rules import RuleSet, load_rules
from ticket_core.clock import ManualClock
from ticket_core.store import TicketStore
from ticket_core.timeline import acknowledge_ticket
from ticket_core.timers import Timelines

from .builders import message
from .test_timers import at, events_of, process

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "intake.example.yaml"
T0 = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def rules() -> RuleSet:
    return load_rules(load_document(EXAMPLE), EXAMPLE.read_bytes())


def store_complaint(rules: RuleSet, key: str) -> Message:
    incoming = message(key, account="store_sh_feedback", text="店员态度差，给差评",
                       received_at=T0)
    decision = rules.decide(incoming)
    assert decision.route == "store_complaint"
    return incoming.model_copy(update={"route": decision})


async def test_an_unacknowledged_store_complaint_moves_on_across_a_restart(
        store: TicketStore, database_url: str, rules: RuleSet) -> None:
    clock = ManualClock(T0)
    async with process(database_url, clock) as before:
        before.timelines = Timelines.from_document(load_document(EXAMPLE))
        kept = await before.persist(store_complaint(rules, "kept"))
        moved = await before.persist(store_complaint(rules, "moved"))
        await at(before, clock, T0 + timedelta(minutes=5))
        await before.write(lambda c: acknowledge_ticket(c, kept.ticket_id or "", clock.now(),
                                                        before.timelines))
        assert await at(before, clock, T0 + timedelta(minutes=10)) >= 1
    async with process(database_url, clock) as after:  # restarted 20 minutes later
        after.timelines = Timelines.from_document(load_document(EXAMPLE))
        await at(after, clock, T0 + timedelta(minutes=40))
        ticket = await after.get_ticket(moved.ticket_id or "")
        assert ticket is not None and (ticket.desk, ticket.skill_group) == (
            "complaints", "sg_hotline")
        stayed = await after.get_ticket(kept.ticket_id or "")
        assert stayed is not None and stayed.desk == "store_sh"
        moves = await events_of(after, "ticket.transferred")
        assert [(m.ticket_id, m.desk, m.data["reason"]) for m in moves] == [
            (moved.ticket_id, "regional", "overflow"), (moved.ticket_id, "complaints",
                                                        "overflow")]
