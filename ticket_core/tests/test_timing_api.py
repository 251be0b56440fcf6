"""The acknowledge, advance and customer endpoints over HTTP, with their events."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from intake.config import ConfigDocument
from intake.message import Identity
from ticket_core.clock import ManualClock
from ticket_core.schemas import CustomerView, TicketDetail
from ticket_core.store import TicketStore
from ticket_core.timers import Timelines

from .builders import message, timed_route
from .test_api import AUTH, ClientFactory, assert_error, build_app
from .test_timers import RULES, STEPS, T0, at, event_types, events_of


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
async def client(store: TicketStore, clock: ManualClock,
                 aiohttp_client: ClientFactory) -> TestClient[Any, Any]:
    store.clock, store.timelines = clock, Timelines.from_document(RULES)
    return await aiohttp_client(build_app(store))


async def post(client: TestClient[Any, Any], path: str, body: Any = None,
               expect: int = 200) -> Any:
    response = await client.post(path, headers=AUTH, json=body)
    assert response.status == expect, await response.text()
    return await response.json()


async def test_acknowledge_stops_the_overflow_not_the_first_response_clock(
        client: TestClient[Any, Any], store: TicketStore, clock: ManualClock) -> None:
    result = await store.persist(message(received_at=T0, routed=timed_route(
        T0, overflow_after=timedelta(minutes=10), steps=STEPS)))
    clock.set(T0 + timedelta(minutes=3))
    body = await post(client, f"/api/v1/tickets/{result.ticket_number}/acknowledge")
    ticket = TicketDetail.model_validate(body)
    assert ticket.acknowledged_at == T0 + timedelta(minutes=3)
    assert {t.ref: t.state for t in ticket.timers if t.kind == "overflow"} == {
        "regional": "done"}
    assert ticket.escalation is not None and ticket.escalation.step == "store_handle"
    again = TicketDetail.model_validate(await post(
        client, f"/api/v1/tickets/{ticket.id}/acknowledge"))
    assert again.acknowledged_at == ticket.acknowledged_at
    await at(store, clock, T0 + timedelta(minutes=30))
    after = TicketDetail.model_validate(await (await client.get(
        f"/api/v1/tickets/{ticket.id}", headers=AUTH)).json())
    assert after.desk == "store_sh"
    types = await event_types(store, ticket.id)
    assert types.count("ticket.acknowledged") == 1
    assert "ticket.transferred" not in types
    # The first reply meets the first-response target, not an acknowledgement (Zendesk's
    # first reply time): its breach fell due at 30 min.
    assert [t.state for t in after.timers if t.kind == "sla_breach"
            and t.ref == "first_response"] == ["fired"]
    assert types.count("sla.breached") == 1


async def test_the_first_reply_over_http_stops_a_first_response_overflow(
        store: TicketStore, clock: ManualClock, aiohttp_client: ClientFactory) -> None:
    from aiohttp import web

    from ticket_core.api import api_routes, auth_middleware
    from ticket_core.replies import ReplyChannels

    from .test_api import TOKEN

    store.clock, store.timelines = clock, Timelines.from_document(RULES)
    app = web.Application(middlewares=[auth_middleware(TOKEN)])
    app.add_routes(api_routes(store, reply_channels=ReplyChannels(
        frozenset({"email"}), {"email": "support"})))
    client = await aiohttp_client(app)
    result = await store.persist(message(received_at=T0, routed=timed_route(
        T0, overflow_after=timedelta(minutes=10), taken_when="first_response")))
    clock.set(T0 + timedelta(minutes=7))
    await post(client, f"/api/v1/tickets/{result.ticket_number}/replies",
               {"text": "您好，已为您处理"}, expect=201)
    await at(store, clock, T0 + timedelta(minutes=40))
    ticket = TicketDetail.model_validate(await (await client.get(
        f"/api/v1/tickets/{result.ticket_id}", headers=AUTH)).json())
    assert ticket.desk == "store_sh"
    assert {(t.kind, t.ref): (t.state, t.reason) for t in ticket.timers
            if t.ref in ("regional", "first_response")} == {
        ("overflow", "regional"): ("done", "first_response"),
        ("sla_warning", "first_response"): ("done", "first_response"),
        ("sla_breach", "first_response"): ("done", "first_response")}
    assert ticket.sla is not None and ticket.sla.first_response_at == T0 + timedelta(minutes=7)


async def test_unknown_ticket_is_404_on_acknowledge_and_advance(
        client: TestClient[Any, Any]) -> None:
    assert_error(await post(client, "/api/v1/tickets/999999/acknowledge", expect=404),
                 "ticket_not_found")
    assert_error(await post(client, "/api/v1/tickets/nope/escalations/x/advance",
                            {"note": "x"}, expect=404), "ticket_not_found")


async def test_advance_needs_a_note_and_a_manual_step(
        client: TestClient[Any, Any], store: TicketStore, clock: ManualClock) -> None:
    result = await store.persist(message(received_at=T0, routed=timed_route(T0, steps=STEPS)))
    path = f"/api/v1/tickets/{result.ticket_id}/escalations/complaint_warning/advance"
    for body in (None, {}, {"note": "  \n"}):
        assert_error(await post(client, path, body, expect=422), "note_required")
    # The pickup step is done when acknowledged, not by hand.
    error = assert_error(await post(client, path, {"note": "接了"}, expect=409),
                         "step_not_manual")
    assert error.fields == {"step": "pickup"}
    assert_error(await post(client, f"/api/v1/tickets/{result.ticket_id}/escalations/"
                            "other/advance", {"note": "x"}, expect=404),
                 "escalation_not_found")
    clock.set(T0 + timedelta(minutes=10))
    await post(client, f"/api/v1/tickets/{result.ticket_id}/acknowledge")
    clock.set(T0 + timedelta(minutes=20))
    ticket = TicketDetail.model_validate(await post(client, path, {"note": "门店已处理"}))
    assert ticket.escalation is not None and ticket.escalation.step == "gm"
    assert (ticket.desk, ticket.skill_group) == ("management", "sg_executives")
    handle = ticket.escalation.steps[1]
    assert (handle.completed_at, handle.note) == (T0 + timedelta(minutes=20), "门店已处理")
    by_id = (f"/api/v1/tickets/{result.ticket_id}/escalations/{ticket.escalation.id}"
             "/advance")
    done = TicketDetail.model_validate(await post(client, by_id, {"note": "总经理回复"}))
    assert done.escalation is not None and done.escalation.completed_at is not None
    assert_error(await post(client, by_id, {"note": "again"}, expect=409),
                 "escalation_completed")
    completed = await events_of(store, "escalation.step_completed")
    assert [(e.data["step"], e.data["note"]) for e in completed] == [
        ("pickup", None), ("store_handle", "门店已处理"), ("gm", "总经理回复")]
    moved = await events_of(store, "ticket.transferred")
    # The store's step targets the desk the ticket is on already: no move for it.
    assert [(e.desk, e.data["reason"]) for e in moved] == [("management", "escalation")]


async def test_patch_customer_sets_vip_level_language_and_merges_fields(
        client: TestClient[Any, Any], store: TicketStore) -> None:
    result = await store.persist(message(received_at=T0))
    await store.persist(message(email="li.wei@example.cn"))
    path = f"/api/v1/customers/{result.customer_id}"
    response = await client.patch(path, headers=AUTH, json={
        "vip_level": 4, "language": "zh-CN", "fields": {"member_no": "M-1", "city": "上海"}})
    assert response.status == 200, await response.text()
    customer = CustomerView.model_validate(await response.json())
    assert (customer.vip_level, customer.language) == (4, "zh-CN")
    assert customer.fields == {"member_no": "M-1", "city": "上海"}
    assert (customer.tickets_count, customer.open_tickets_count) == (2, 2)
    response = await client.patch(path, headers=AUTH, json={"fields": {"city": None, "n": 3}})
    customer = CustomerView.model_validate(await response.json())
    assert customer.fields == {"member_no": "M-1", "n": 3} and customer.vip_level == 4
    same = await client.patch(path, headers=AUTH, json={"vip_level": 4})
    assert same.status == 200
    updates = await events_of(store, "customer.updated")
    assert [e.data["changes"] for e in updates] == [
        {"vip_level": [0, 4], "language": [None, "zh-CN"],
         "fields": [{}, {"member_no": "M-1", "city": "上海"}]},
        {"fields": [{"member_no": "M-1", "city": "上海"}, {"member_no": "M-1", "n": 3}]}]
    found = await (await client.get("/api/v1/customers", headers=AUTH,
                                    params={"identity": "email:li.wei@example.cn"})).json()
    assert found["items"][0]["vip_level"] == 4


@pytest.mark.parametrize("body", [
    {"vip_level": 10}, {"vip_level": -1}, {"language": "not a tag"}, {"fields": [1]},
    {"unknown": 1}, {"name": "a\x00b"},
])
async def test_bad_customer_patches_are_422(client: TestClient[Any, Any], store: TicketStore,
                                            body: dict[str, Any]) -> None:
    result = await store.persist(message())
    response = await client.patch(f"/api/v1/customers/{result.customer_id}", headers=AUTH,
                                  json=body)
    assert response.status == 422
    assert_error(await response.json(), "invalid_body")


async def test_patching_an_unknown_customer_is_404(client: TestClient[Any, Any]) -> None:
    response = await client.patch("/api/v1/customers/nobody", headers=AUTH,
                                  json={"vip_level": 1})
    assert response.status == 404
    assert_error(await response.json(), "customer_not_found")


async def test_repeated_identities_find_the_owner_of_the_first_one_found(
        client: TestClient[Any, Any], store: TicketStore) -> None:
    phone = await store.persist(message(email=None, identities=[
        Identity(kind="phone", value="+8613800138000")]))
    mail = await store.persist(message(email="Li.Wei@Example.CN"))
    response = await client.get("/api/v1/customers", headers=AUTH, params=[
        ("identity", "wechat_openid:o-none"), ("identity", "email:li.wei@example.cn"),
        ("identity", "phone:+8613800138000")])
    assert response.status == 200
    assert [c["id"] for c in (await response.json())["items"]] == [mail.customer_id]
    response = await client.get("/api/v1/customers", headers=AUTH, params=[
        ("identity", "phone:+8613800138000"), ("identity", "email:li.wei@example.cn")])
    assert [c["id"] for c in (await response.json())["items"]] == [phone.customer_id]
    response = await client.get("/api/v1/customers", headers=AUTH, params=[
        ("identity", "email:nobody@example.cn"), ("identity", "phone:+860")])
    assert await response.json() == {"items": [], "next": None}
    too_many = [("identity", f"email:{i}@example.cn") for i in range(21)]
    response = await client.get("/api/v1/customers", headers=AUTH, params=too_many)
    assert response.status == 400
    assert_error(await response.json(), "invalid_parameter")


async def test_resolving_stops_the_resolution_clock_and_completes_a_step_done_when_resolved(
        client: TestClient[Any, Any], store: TicketStore, clock: ManualClock) -> None:
    store.timelines = Timelines.from_document(ConfigDocument(path=Path("r.yaml"), data={
        "escalations": [{"id": "resolve_flow", "steps": [
            {"id": "fix", "within": "1h", "done_when": "resolved"},
            {"id": "review", "within": "2h"}]}]}))
    result = await store.persist(message(received_at=T0, routed=timed_route(
        T0, steps=[("fix", None, timedelta(hours=1)), ("review", None, timedelta(hours=2))],
        timeline="resolve_flow")))
    clock.set(T0 + timedelta(minutes=20))
    response = await client.patch(f"/api/v1/tickets/{result.ticket_id}", headers=AUTH,
                                  json={"status": "resolved"})
    assert response.status == 200, await response.text()
    ticket = TicketDetail.model_validate(await response.json())
    states = {(t.kind, t.ref): (t.state, t.reason) for t in ticket.timers}
    assert states[("sla_breach", "resolution")] == ("done", "resolved")
    assert states[("sla_warning", "resolution")] == ("done", "resolved")
    assert states[("escalation_step", "resolve_flow.fix")] == ("done", "completed")
    assert ticket.escalation is not None and ticket.escalation.step == "review"
    assert ticket.escalation.steps[0].completed_at == T0 + timedelta(minutes=20)
    assert ticket.escalation.steps[1].due_at == T0 + timedelta(hours=2, minutes=20)


async def test_decisions_are_listed_by_when_they_were_stored_with_the_message_rebuilt(
        client: TestClient[Any, Any], store: TicketStore) -> None:
    first = await store.persist(message("d1", received_at=T0, routed=timed_route(T0),
                                        identities=[Identity(kind="email", value="a@b.cn"),
                                                    Identity(kind="phone",
                                                             value="+8613800138000")]))
    follow_up = await store.persist(message("d2", email="a@b.cn", routed=timed_route(T0)))
    await store.persist(message("unrouted"))  # no decision: not a replay input
    page = await (await client.get("/api/v1/decisions", headers=AUTH,
                                   params={"limit": "1"})).json()
    assert [i["message_id"] for i in page["items"]] == [first.message_id]
    item = page["items"][0]
    assert item["ticket_number"] == first.ticket_number
    assert item["decision"]["route"] == "store_complaint"
    assert item["message"]["sender"]["identities"] == [
        {"kind": "email", "value": "a@b.cn", "verified": False},
        {"kind": "phone", "value": "+8613800138000", "verified": False}]
    assert item["message"]["idempotency_key"] == "webform:contact:d1"
    assert "route" not in item["message"]
    rest = await (await client.get("/api/v1/decisions", headers=AUTH,
                                   params={"cursor": page["next"]})).json()
    assert [i["message_id"] for i in rest["items"]] == [follow_up.message_id]
    assert rest["next"] is None
    ticket = TicketDetail.model_validate(await (await client.get(
        f"/api/v1/tickets/{first.ticket_id}", headers=AUTH)).json())
    assert ticket.messages[0].route is not None
    later = await (await client.get("/api/v1/decisions", headers=AUTH, params={
        "since": "2999-01-01T00:00:00Z"})).json()
    assert later == {"items": [], "next": None}
    for params in ({"since": "yesterday"}, {"limit": "0"}, {"cursor": "x"}, {"x": "1"}):
        response = await client.get("/api/v1/decisions", headers=AUTH, params=params)
        assert response.status == 400, params
        assert_error(await response.json(), "invalid_parameter")
