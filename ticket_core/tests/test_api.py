"""The agent API over aiohttp: auth, tickets, customers, errors and the OpenAPI document."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from intake.message import Attachment, Identity
from ticket_core.api import api_routes, auth_middleware, ready_check
from ticket_core.db import make_engine
from ticket_core.openapi import build_openapi
from ticket_core.schemas import CustomerPage, CustomerView, ErrorBody, TicketDetail, TicketPage
from ticket_core.store import TicketStore

from .builders import message, route

TOKEN = "t0ken-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


def build_app(store: TicketStore, token: str = TOKEN) -> web.Application:
    app = web.Application(middlewares=[auth_middleware(token)])

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app.add_routes([web.get("/healthz", healthz), *api_routes(store)])
    return app


@pytest.fixture
async def client(store: TicketStore, aiohttp_client: ClientFactory) -> TestClient[Any, Any]:
    return await aiohttp_client(build_app(store))


async def get(client: TestClient[Any, Any], path: str, expect: int = 200,
              **params: str) -> Any:
    response = await client.get(path, headers=AUTH, params=params)
    assert response.status == expect, await response.text()
    assert response.content_type == "application/json"
    return await response.json()


def assert_error(body: Any, code: str) -> ErrorBody:
    error = ErrorBody.model_validate(body)
    assert error.error == code and error.message
    return error


# ---- auth ------------------------------------------------------------------------------------

@pytest.mark.parametrize("headers", [
    {}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
    {"Authorization": "Bearer"}, {"Authorization": f"Bearer {TOKEN}x"},
])
async def test_calls_without_the_right_token_are_401(client: TestClient[Any, Any],
                                                     headers: dict[str, str]) -> None:
    for path in ("/api/v1/tickets", "/api/v1/tickets/1001", "/api/v1/customers/x",
                 "/api/v1/nowhere"):
        response = await client.get(path, headers=headers)
        assert response.status == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert_error(await response.json(), "unauthorized")


async def test_bearer_scheme_is_case_insensitive(client: TestClient[Any, Any]) -> None:
    response = await client.get("/api/v1/tickets", headers={"Authorization": f"bearer {TOKEN}"})
    assert response.status == 200


async def test_an_empty_configured_token_refuses_everything(
        store: TicketStore, aiohttp_client: ClientFactory) -> None:
    client = await aiohttp_client(build_app(store, token=""))
    response = await client.get("/api/v1/tickets", headers={"Authorization": "Bearer "})
    assert response.status == 401


async def test_paths_outside_the_api_need_no_token(client: TestClient[Any, Any]) -> None:
    response = await client.get("/healthz")
    assert response.status == 200


# ---- tickets ---------------------------------------------------------------------------------

async def test_ticket_list_and_detail(client: TestClient[Any, Any], store: TicketStore) -> None:
    attachment = Attachment(filename="a.pdf", content_type="application/pdf", size=10,
                            sha256="b" * 64, blob="sha256:" + "b" * 64)
    result = await store.persist(message("api-1", routed=route("aftersales"),
                                         attachments=[attachment]))

    page = TicketPage.model_validate(await get(client, "/api/v1/tickets"))
    assert page.next is None
    [item] = page.items
    assert (item.id, item.number, item.desk, item.status) == (
        result.ticket_id, 1001, "aftersales", "new")

    raw = await get(client, f"/api/v1/tickets/{result.ticket_id}")
    for name in ("id", "number", "channel", "desk", "skill_group", "status", "priority",
                 "category", "tags", "subject", "customer_id", "route", "created_at",
                 "updated_at", "messages"):
        assert name in raw
    [m] = raw["messages"]
    for name in ("id", "direction", "kind", "channel", "account", "subject", "text", "flags",
                 "attachments", "occurred_at", "received_at", "persisted_at",
                 "idempotency_key", "form", "call"):
        assert name in m
    assert m["idempotency_key"] == "webform:contact:api-1"
    assert m["attachments"][0].items() >= {"filename": "a.pdf", "content_type": "application/pdf",
                                           "size": 10, "sha256": "b" * 64}.items()
    assert m["received_at"].endswith("Z") or m["received_at"].endswith("+00:00")
    detail = TicketDetail.model_validate(raw)
    assert detail.messages[0].direction == "in"

    by_number = await get(client, "/api/v1/tickets/1001")
    assert by_number["id"] == result.ticket_id


async def test_ticket_filters_over_http(client: TestClient[Any, Any], store: TicketStore) -> None:
    a = await store.persist(message("h1", routed=route("sales"),
                                    channel_data={"reference": "WF-ABC"}))
    await store.persist(message("h2", routed=route("aftersales"), channel="email",
                                account="help@shop.cn", kind="message"))

    async def numbers(**params: str) -> list[int]:
        body = await get(client, "/api/v1/tickets", **params)
        return [t["number"] for t in body["items"]]

    assert await numbers(desk="sales") == [a.ticket_number]
    assert await numbers(channel="webform", status="open") == [a.ticket_number]
    assert await numbers(idempotency_key="webform:contact:h1") == [a.ticket_number]
    assert await numbers(reference="WF-ABC") == [a.ticket_number]
    assert await numbers(customer_id=a.customer_id, priority="normal") == [1002, 1001]
    # The contract's template sends empty values: they count as absent.
    assert await numbers(channel="", desk="", status="", limit="") == [1002, 1001]


async def test_pagination_follows_next(client: TestClient[Any, Any], store: TicketStore) -> None:
    await store.persist_many([message(email=f"n{i}@example.com") for i in range(5)])
    numbers: list[int] = []
    params = {"limit": "2"}
    while True:
        body = await get(client, "/api/v1/tickets", **params)
        numbers += [t["number"] for t in body["items"]]
        if body["next"] is None:
            break
        params = {"limit": "2", "cursor": body["next"]}
    assert numbers == [1005, 1004, 1003, 1002, 1001]


@pytest.mark.parametrize(("params", "field"), [
    ({"limit": "0"}, "limit"), ({"limit": "201"}, "limit"), ({"limit": "ten"}, "limit"),
    ({"status": "bogus"}, "status"), ({"status": "open,nope"}, "status"),
    ({"channel": "fax"}, "channel"), ({"priority": "asap"}, "priority"),
    ({"cursor": "not-a-cursor"}, "cursor"), ({"colour": "red"}, "colour"),
    ({"sla": "late"}, "sla"), ({"sort": "name"}, "sort"),
    ({"sort": "due", "cursor": "not-a-cursor"}, "cursor"),
])
async def test_bad_list_parameters_are_400(client: TestClient[Any, Any],
                                           params: dict[str, str], field: str) -> None:
    body = await get(client, "/api/v1/tickets", 400, **params)
    error = assert_error(body, "invalid_parameter")
    assert field in error.fields


async def test_limit_of_200_is_allowed(client: TestClient[Any, Any]) -> None:
    assert (await get(client, "/api/v1/tickets", limit="200"))["items"] == []


async def test_unknown_ticket_is_404(client: TestClient[Any, Any]) -> None:
    assert_error(await get(client, "/api/v1/tickets/5555", 404), "ticket_not_found")
    assert_error(await get(client, "/api/v1/tickets/no-such-id", 404), "ticket_not_found")


async def test_unknown_paths_and_methods_answer_json(client: TestClient[Any, Any]) -> None:
    assert_error(await get(client, "/api/v1/nowhere", 404), "not_found")
    assert_error(await get(client, "/api/v1/tickets/1/extra", 404), "not_found")
    response = await client.delete("/api/v1/tickets", headers=AUTH)
    assert response.status == 405
    assert "GET" in response.headers["Allow"]
    assert_error(await response.json(), "method_not_allowed")


# ---- customers -------------------------------------------------------------------------------

async def test_customer_and_identity_lookup(client: TestClient[Any, Any],
                                            store: TicketStore) -> None:
    result = await store.persist(message(identities=[
        Identity(kind="email", value="li.wei@example.cn"),
        Identity(kind="wecom_userid", value="corp1:liwei", verified=True)]))

    customer = CustomerView.model_validate(
        await get(client, f"/api/v1/customers/{result.customer_id}"))
    assert {(i.kind, i.value, i.verified) for i in customer.identities} == {
        ("email", "li.wei@example.cn", False), ("wecom_userid", "corp1:liwei", True)}

    found = CustomerPage.model_validate(
        await get(client, "/api/v1/customers", identity="wecom_userid:corp1:liwei"))
    assert [c.id for c in found.items] == [result.customer_id] and found.next is None
    none = await get(client, "/api/v1/customers", identity="email:nobody@example.com")
    assert none == {"items": [], "next": None}


async def test_lookup_by_several_identities_answers_the_first_found(
        client: TestClient[Any, Any], store: TicketStore) -> None:
    # The router's lookup: all of a sender's identities in one call, the first found wins.
    mail = await store.persist(message(identities=[Identity(kind="email", value="a@shop.cn")]))
    phone = await store.persist(message(identities=[
        Identity(kind="phone", value="+8613800138000")]))

    async def lookup(*identities: str) -> list[str]:
        response = await client.get("/api/v1/customers", headers=AUTH,
                                    params=[("identity", i) for i in identities])
        assert response.status == 200, await response.text()
        return [c["id"] for c in (await response.json())["items"]]

    assert await lookup("email:nobody@x.cn", "phone:+8613800138000", "email:a@shop.cn") == [
        phone.customer_id]
    assert await lookup("email:a@shop.cn", "phone:+8613800138000") == [mail.customer_id]
    assert await lookup("email:nobody@x.cn", "phone:+8600000000000") == []
    too_many = await client.get("/api/v1/customers", headers=AUTH,
                                params=[("identity", f"email:{n}@x.cn") for n in range(21)])
    assert too_many.status == 400
    assert_error(await too_many.json(), "invalid_parameter")


async def test_unknown_customer_is_404(client: TestClient[Any, Any]) -> None:
    assert_error(await get(client, "/api/v1/customers/missing", 404), "customer_not_found")


@pytest.mark.parametrize("params", [{}, {"identity": ""}, {"identity": "email"},
                                    {"identity": "fax:123"}, {"identity": "email:"},
                                    {"identity": "email:a@b.c", "extra": "1"}])
async def test_bad_identity_lookup_is_400(client: TestClient[Any, Any],
                                          params: dict[str, str]) -> None:
    assert_error(await get(client, "/api/v1/customers", 400, **params), "invalid_parameter")


# ---- failures and the document ---------------------------------------------------------------

async def test_unreachable_database_is_503(aiohttp_client: ClientFactory) -> None:
    engine = make_engine("postgresql+asyncpg://postgres@127.0.0.1:1/none", pool_pre_ping=False)
    try:
        client = await aiohttp_client(build_app(TicketStore(engine)))
        for path in ("/api/v1/tickets", "/api/v1/tickets/1001", "/api/v1/customers/x"):
            response = await client.get(path, headers=AUTH)
            assert response.status == 503
            assert response.headers["Retry-After"]
            assert_error(await response.json(), "storage_unavailable")
    finally:
        await engine.dispose()


async def test_openapi_document_describes_the_api(client: TestClient[Any, Any]) -> None:
    response = await client.get("/api/v1/openapi.json")  # no token needed
    assert response.status == 200
    doc = await response.json()
    assert doc["openapi"].startswith("3.1")
    assert set(doc["paths"]) == {"/api/v1/tickets", "/api/v1/tickets/{ticket_id}",
                                 "/api/v1/tickets/{ticket_id}/replies",
                                 "/api/v1/attachments/{sha256}", "/api/v1/events",
                                 "/api/v1/customers", "/api/v1/customers/{customer_id}",
                                 "/api/v1/calls/{call_id}", "/api/v1/calls/{call_id}/pick",
                                 "/api/v1/tickets/{ticket_id}/acknowledge",
                                 "/api/v1/tickets/{ticket_id}/escalations",
                                 "/api/v1/tickets/{ticket_id}/escalations/{escalation_id}"
                                 "/advance",
                                 "/api/v1/decisions", "/api/v1/openapi.json",
                                 "/api/v1/fields",
                                 "/api/v1/agents", "/api/v1/agents/{agent_id}",
                                 "/api/v1/agents/{agent_id}/presence",
                                 "/api/v1/agents/me/notifications",
                                 "/api/v1/notifications/{notification_id}/read",
                                 "/api/v1/tokens", "/api/v1/tokens/{token_id}",
                                 "/api/v1/tickets/{ticket_id}/notes", "/api/v1/test-clock",
                                 "/api/v1/search",
                                 "/api/v1/tickets/{ticket_id}/claim",
                                 "/api/v1/queues/{skill_group}/next",
                                 "/api/v1/tickets/{ticket_id}/assignee",
                                 "/api/v1/tickets/{ticket_id}/transfer",

                                 "/api/v1/quick-replies",
                                 "/api/v1/quick-replies/{quick_reply_id}",
                                 "/api/v1/tickets/{ticket_id}/quick-replies"
                                 "/{quick_reply_id}/render",
                                 "/api/v1/tickets/{ticket_id}/reminders",
                                 "/api/v1/agents/me/reminders",
                                 "/api/v1/reminders/{reminder_id}",
                                 "/api/v1/tickets/{ticket_id}/history",
                                 "/api/v1/customers/{customer_id}/history",
                                 "/api/v1/tickets/{ticket_id}/merge",
                                 "/api/v1/customers/{customer_id}/merge",
                                 "/api/v1/tickets/{ticket_id}/satisfaction"}
    assert doc["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    ticket_params = {p["name"] for p in doc["paths"]["/api/v1/tickets"]["get"]["parameters"]}
    assert ticket_params >= {"channel", "desk", "status", "customer_id", "priority",
                             "idempotency_key", "limit", "cursor"}
    assert set(doc["paths"]["/api/v1/tickets/{ticket_id}"]) == {"get", "patch"}
    assert set(doc["paths"]["/api/v1/tickets"]) == {"get", "post"}
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            # A pick, an acknowledgement, an advance, a read, a clock move change what they
            # name, a render creates nothing, a merge answers its target: 200, not 201; a
            # revocation answers nothing: 204.
            created = method == "post" and not path.endswith(
                ("/pick", "/acknowledge", "/advance", "/read", "/test-clock", "/claim", "/next",
                 "/transfer", "/render", "/merge"))
            assert ("201" if created else "204" if method == "delete" else "200") in responses
            if path != "/api/v1/openapi.json":
                assert {"401", "503"} <= set(responses)
    message_schema = doc["components"]["schemas"]["MessageView"]["properties"]
    assert {"idempotency_key", "attachments", "call", "form"} <= set(message_schema)

    # Every $ref points at a schema that exists.
    def refs(node: Any) -> list[str]:
        if isinstance(node, dict):
            found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
            return found + [r for v in node.values() for r in refs(v)]
        if isinstance(node, list):
            return [r for v in node for r in refs(v)]
        return []

    schemas = doc["components"]["schemas"]
    for ref in refs(doc):
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas


async def test_ready_check_reports_the_database(store: TicketStore) -> None:
    app = web.Application()
    assert await ready_check(store)(app) is None
    engine = make_engine("postgresql+asyncpg://postgres@127.0.0.1:1/none", pool_pre_ping=False)
    try:
        reason = await ready_check(TicketStore(engine))(app)
        assert reason is not None and reason.startswith("database")
    finally:
        await engine.dispose()


def test_openapi_document_passes_the_spec_validator() -> None:
    validator = pytest.importorskip("openapi_spec_validator")  # dev dependency, when present
    validator.validate(build_openapi())
