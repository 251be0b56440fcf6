"""Custom fields and tags: every type's canonical value and refusals, stale values, the 422s of
`PATCH /api/v1/tickets/{id}` and `PATCH /api/v1/customers/{id}`, `fields_required` on
resolving, tag spelling and the `?tag=` filter, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import select

from intake.config import load_document
from ticket_core.fields import (
    FieldDefinition,
    FieldSet,
    FieldsInvalid,
    clean_value,
    missing_on_resolve,
)
from ticket_core.statements import TICKET_TAGS
from ticket_core.store import TicketStore
from ticket_core.tags import normalize_tag, normalize_tags
from ticket_core.tickets_config import TicketsConfig, load_tickets

from .builders import message, route
from .test_api import AUTH, ClientFactory, assert_error, build_app
from .test_timers import events_of

CONFIG = """\
desks:
  - {id: aftersales, name: 售后}
  - {id: presales, name: 售前}
categories:
  - {id: inquiry, name: 咨询}
  - {id: complaint, name: 投诉}
tickets:
  default_phone_region: CN
  ticket_fields:
    - {key: order_no, label: 订单号, type: text, pattern: "^[0-9]{8}-[0-9]{4}$"}
    - {key: note, label: 备注, type: textarea, max: 20}
    - {key: quantity, label: 数量, type: number, min: 1, max: 99}
    - {key: refund_amount, label: 退款金额, type: decimal, min: 0, max: 100000}
    - {key: visit_date, label: 上门日期, type: date, min: 2026-01-01}
    - {key: visit_at, label: 上门时间, type: datetime}
    - key: product_line
      label: 产品线
      type: select
      options: [{value: phone, label: 手机}, {value: laptop, label: 笔记本}]
    - key: colours
      label: 颜色
      type: multiselect
      max: 2
      options: [{value: red, label: 红}, {value: blue, label: 蓝}, {value: black, label: 黑}]
    - {key: gift, label: 赠品, type: checkbox}
    - {key: contact_email, label: 邮箱, type: email}
    - {key: contact_phone, label: 电话, type: phone}
    - {key: evidence, label: 凭证链接, type: url}
    - key: resolution_code
      label: 解决方式
      type: select
      required: on_resolve
      desks: [aftersales]
      options: [{value: refunded, label: 已退款}, {value: explained, label: 已解释}]
  customer_fields:
    - {key: member_level, label: 会员等级, type: select, options: [normal, vip]}
    - {key: backup_phone, label: 备用电话, type: phone}
"""


def tickets_config(tmp_path: Path, text: str = CONFIG) -> TicketsConfig:
    path = tmp_path / "fields.yaml"
    path.write_text(text, encoding="utf-8")
    return load_tickets(load_document(path))


def field(tmp_path: Path, key: str) -> FieldDefinition:
    return tickets_config(tmp_path).ticket_field_set.definitions[key]


# ---- every type: the stored form, and what is refused ----------------------------------

@pytest.mark.parametrize(("key", "given", "stored"), [
    ("order_no", " 20261001-0001 ", "20261001-0001"),
    ("note", "第一行\r\n第二行", "第一行\n第二行"),
    ("quantity", 3, 3),
    ("refund_amount", "1299.50", "1299.50"),
    ("refund_amount", "0.1", "0.1"),
    ("refund_amount", 100, "100"),
    ("refund_amount", "99999.999999999999999999", "99999.999999999999999999"),
    ("visit_date", "2028-02-29", "2028-02-29"),
    ("visit_at", "2026-10-08T09:30:00+08:00", "2026-10-08T01:30:00Z"),
    ("visit_at", "2026-10-08T01:30:00Z", "2026-10-08T01:30:00Z"),
    ("product_line", "laptop", "laptop"),
    ("colours", ["blue", "red", "blue"], ["red", "blue"]),
    ("gift", False, False),
    ("contact_email", "Li.Wei@Example.CN", "Li.Wei@example.cn"),
    ("contact_phone", "138 0013 8000", "+8613800138000"),
    ("contact_phone", "+44 20 7946 0000", "+442079460000"),
    ("evidence", "https://shop.example/orders/1?x=1", "https://shop.example/orders/1?x=1"),
])
def test_each_type_stores_its_canonical_value(tmp_path: Path, key: str, given: Any,
                                              stored: Any) -> None:
    assert clean_value(field(tmp_path, key), given, "CN") == stored


@pytest.mark.parametrize(("key", "given", "says"), [
    ("order_no", "2026-1", "not in the expected format"),
    ("order_no", 20261001, "expected text"),
    ("note", "x" * 21, "at most 20 characters"),
    ("quantity", "3", "whole number"),
    ("quantity", 2.5, "whole number"),
    ("quantity", True, "whole number"),
    ("quantity", 100, "at most 99"),
    ("quantity", 0, "at least 1"),
    ("refund_amount", 12.5, "JSON float is not exact"),
    ("refund_amount", "12,50", "decimal number"),
    ("refund_amount", "NaN", "decimal number"),
    ("refund_amount", "1e5", "decimal number"),
    ("refund_amount", "-0.01", "at least 0"),
    ("refund_amount", "100000.01", "at most 100000"),
    ("visit_date", "2026-02-30", "is not a day of the calendar"),
    ("visit_date", "2026-13-01", "is not a day of the calendar"),
    ("visit_date", "20260301", "YYYY-MM-DD"),
    ("visit_date", "2025-12-31", "at least 2026-01-01"),
    ("visit_at", "2026-10-08T09:30:00", "time zone offset"),
    ("visit_at", "2026-02-30T09:30:00Z", "ISO 8601"),
    ("product_line", "tablet", "not an option; choose one of phone, laptop"),
    ("product_line", ["phone"], "not an option"),
    ("colours", ["green"], "not an option: green"),
    ("colours", ["red", "blue", "black"], "choose at most 2"),
    ("colours", "red", "list of option values"),
    ("gift", "yes", "true or false"),
    ("contact_email", "not-an-address", "valid email address"),
    ("contact_phone", "12345", "valid phone number"),
    ("contact_phone", "call me", "valid phone number"),
    ("evidence", "javascript:alert(1)", "http:// or https://"),
    ("evidence", "https://shop.example/a b", "without spaces"),
])
def test_each_type_refuses_what_it_cannot_store(tmp_path: Path, key: str, given: Any,
                                                says: str) -> None:
    with pytest.raises(ValueError, match=None) as caught:
        clean_value(field(tmp_path, key), given, "CN")
    assert says in str(caught.value)


def test_a_national_number_needs_the_default_region(tmp_path: Path) -> None:
    phone = field(tmp_path, "contact_phone")
    with pytest.raises(ValueError, match="country code"):
        clean_value(phone, "138 0013 8000", None)


def test_tags_are_trimmed_nfkc_latin_folded_and_bounded() -> None:
    assert normalize_tag("  ＶＩＰ ") == "vip"
    assert normalize_tag("Straße") == "strasse"
    assert normalize_tag("退款  加急") == "退款 加急"
    assert normalize_tag("ΣΑΣ") == "ΣΑΣ"  # Latin letters only are folded
    assert normalize_tags(["VIP", "vip", "ｖｉｐ", "退款"]) == ["vip", "退款"]
    for bad in ("", "   ", "x" * 51, "a\x00b", 3):
        with pytest.raises(ValueError):
            normalize_tag(bad)
    assert normalize_tag("字" * 50) == "字" * 50


# ---- over the API, on both databases ----------------------------------------------------

@pytest.fixture
async def client(store: TicketStore, aiohttp_client: ClientFactory,
                 tmp_path: Path) -> TestClient[Any, Any]:
    store.tickets = tickets_config(tmp_path)
    return await aiohttp_client(build_app(store))


async def patch(client: TestClient[Any, Any], ref: Any, body: Any, expect: int = 200) -> Any:
    response = await client.patch(f"/api/v1/tickets/{ref}", headers=AUTH, json=body)
    assert response.status == expect, await response.text()
    return await response.json()


async def test_fields_are_written_merged_removed_and_shown(
        client: TestClient[Any, Any], store: TicketStore) -> None:
    result = await store.persist(message(routed=route("aftersales")))
    body = await patch(client, result.ticket_number, {"fields": {
        "order_no": "20261001-0001", "refund_amount": "1299.50", "visit_date": "2026-10-08",
        "colours": ["blue", "red"], "contact_phone": "13800138000", "gift": True}})
    assert body["fields"] == {"order_no": "20261001-0001", "refund_amount": "1299.50",
                              "visit_date": "2026-10-08", "colours": ["red", "blue"],
                              "contact_phone": "+8613800138000", "gift": True}
    body = await patch(client, result.ticket_id, {"fields": {"gift": None, "quantity": 2}})
    assert "gift" not in body["fields"] and body["fields"]["quantity"] == 2
    listed = await (await client.get("/api/v1/tickets", headers=AUTH)).json()
    assert listed["items"][0]["fields"]["refund_amount"] == "1299.50"
    updates = await events_of(store, "ticket.updated")
    assert updates[0].data["changes"]["fields"][0] == {}
    assert updates[1].data["changes"]["fields"][1]["quantity"] == 2


async def test_every_bad_value_gets_its_own_message_and_nothing_is_written(
        client: TestClient[Any, Any], store: TicketStore) -> None:
    result = await store.persist(message(routed=route("presales")))
    body = await patch(client, result.ticket_id, {"category": "complaint", "tags": ["ok"],
                                                  "fields": {
        "order_no": "abc", "refund_amount": 1.5, "visit_date": "2026-02-30",
        "product_line": "tablet", "contact_phone": "12", "nonsense": 1,
        "resolution_code": "refunded"}}, expect=422)
    error = assert_error(body, "invalid_fields")
    assert set(error.fields) == {"order_no", "refund_amount", "visit_date", "product_line",
                                 "contact_phone", "nonsense", "resolution_code"}
    assert "unknown field" in error.fields["nonsense"]
    assert error.fields["resolution_code"] == "not a field of desk presales"
    assert "not a day of the calendar" in error.fields["visit_date"]
    ticket = await store.get_ticket(result.ticket_id or "")
    assert ticket is not None
    assert (ticket.fields, ticket.tags, ticket.category) == ({}, [], None)
    assert await events_of(store, "ticket.updated") == []


@pytest.mark.parametrize("body", [
    {}, {"fields": [1]}, {"fields": {"quantity": 1}, "colour": "red"}, {"status": None},
    {"tags": "vip"}, {"fields": {"order_no": "a\x00b"}},
])
async def test_malformed_patches_are_invalid_body(client: TestClient[Any, Any],
                                                  store: TicketStore, body: Any) -> None:
    result = await store.persist(message())
    assert_error(await patch(client, result.ticket_id, body, expect=422), "invalid_body")


async def test_a_stale_value_stays_readable_and_cannot_be_written_again(
        client: TestClient[Any, Any], store: TicketStore, tmp_path: Path) -> None:
    result = await store.persist(message(routed=route("aftersales")))
    await patch(client, result.ticket_id, {"fields": {"product_line": "phone",
                                                      "order_no": "20261001-0001"}})
    # The config drops the option `phone` and the field `order_no`.
    store.tickets = tickets_config(tmp_path, CONFIG.replace(
        "{value: phone, label: 手机}, ", "").replace(
        '    - {key: order_no, label: 订单号, type: text, pattern: "^[0-9]{8}-[0-9]{4}$"}\n',
        ""))
    ticket = await (await client.get(f"/api/v1/tickets/{result.ticket_id}",
                                     headers=AUTH)).json()
    assert ticket["fields"] == {"product_line": {"value": "phone", "stale": True},
                                "order_no": {"value": "20261001-0001", "stale": True}}
    # Other writes keep it; writing it again is refused; removing it works.
    body = await patch(client, result.ticket_id, {"fields": {"quantity": 5}})
    assert body["fields"]["product_line"] == {"value": "phone", "stale": True}
    again = assert_error(await patch(client, result.ticket_id, {"fields": {
        "product_line": "phone", "order_no": "20261001-0001"}}, expect=422), "invalid_fields")
    assert set(again.fields) == {"product_line", "order_no"}
    body = await patch(client, result.ticket_id, {"fields": {"product_line": None,
                                                             "order_no": None}})
    assert body["fields"] == {"quantity": 5}


async def test_resolving_needs_the_desks_on_resolve_fields(
        client: TestClient[Any, Any], store: TicketStore) -> None:
    result = await store.persist(message(routed=route("aftersales")))
    error = assert_error(await patch(client, result.ticket_id, {"status": "resolved"},
                                     expect=422), "fields_required")
    assert error.fields == {"resolution_code": "required to resolve"}
    assert "resolution_code" in error.message
    # The other changes of a refused resolution are not written either.
    assert_error(await patch(client, result.ticket_id, {
        "status": "resolved", "fields": {"quantity": 2}, "add_tags": ["x"]}, expect=422),
        "fields_required")
    ticket = await store.get_ticket(result.ticket_id or "")
    assert ticket is not None and ticket.status == "new"
    assert (ticket.fields, ticket.tags) == ({}, [])
    assert await events_of(store, "ticket.updated") == []
    body = await patch(client, result.ticket_id, {"status": "resolved",
                                                  "fields": {"resolution_code": "refunded"}})
    assert body["status"] == "resolved" and body["fields"]["resolution_code"] == "refunded"
    # Another desk's ticket has no such field: it resolves as it is.
    other = await store.persist(message("p", routed=route("presales")))
    assert (await patch(client, other.ticket_id, {"status": "resolved"}))["status"] == \
        "resolved"


async def test_status_alone_still_works(client: TestClient[Any, Any],
                                        store: TicketStore) -> None:
    result = await store.persist(message(routed=route("presales")))
    assert (await patch(client, result.ticket_id, {"status": "pending"}))["status"] == "pending"


async def test_category_must_be_one_of_the_config(client: TestClient[Any, Any],
                                                  store: TicketStore) -> None:
    result = await store.persist(message())
    error = assert_error(await patch(client, result.ticket_id, {"category": "nothing"},
                                     expect=422), "unknown_category")
    assert "complaint" in error.fields["category"]
    body = await patch(client, result.ticket_id, {"category": "complaint"})
    assert body["category"] == "complaint"
    assert (await patch(client, result.ticket_id, {"category": None}))["category"] is None
    changes = [e.data["changes"] for e in await events_of(store, "ticket.updated")]
    assert changes == [{"category": [None, "complaint"]}, {"category": ["complaint", None]}]


async def test_tags_replace_add_remove_and_filter(client: TestClient[Any, Any],
                                                  store: TicketStore) -> None:
    routed = await store.persist(message("a", routed=route(tags=["VIP", " 退款 "])))
    plain = await store.persist(message("b", email="b@example.cn"))
    body = await patch(client, plain.ticket_id, {"tags": ["ＶＩＰ", "Urgent", "vip"]})
    assert body["tags"] == ["vip", "urgent"]
    body = await patch(client, plain.ticket_id, {"add_tags": ["退款", "URGENT"],
                                                 "remove_tags": ["Vip"]})
    assert body["tags"] == ["urgent", "退款"]

    async def tagged(tag: str) -> set[str]:
        page = await (await client.get("/api/v1/tickets", headers=AUTH,
                                       params={"tag": tag})).json()
        return {t["id"] for t in page["items"]}

    assert await tagged("VIP") == {routed.ticket_id}
    assert await tagged("退款") == {routed.ticket_id, plain.ticket_id}
    assert await tagged("urgent") == {plain.ticket_id}
    assert await tagged("nothing") == set()
    async with store.engine.connect() as connection:
        rows = (await connection.execute(select(TICKET_TAGS.c.ticket_id, TICKET_TAGS.c.tag)
                                         .order_by(TICKET_TAGS.c.tag))).all()
    assert sorted((r.ticket_id == plain.ticket_id, r.tag) for r in rows) == sorted([
        (False, "vip"), (False, "退款"), (True, "urgent"), (True, "退款")])
    changes = [e.data["changes"]["tags"] for e in await events_of(store, "ticket.updated")]
    assert changes == [[[], ["vip", "urgent"]], [["vip", "urgent"], ["urgent", "退款"]]]


@pytest.mark.parametrize(("body", "key"), [
    ({"tags": ["ok", ""]}, "tags.1"),
    ({"tags": ["x" * 51]}, "tags.0"),
    ({"tags": [f"t{i}" for i in range(31)]}, "tags"),
    ({"add_tags": ["a"], "remove_tags": ["A"]}, "add_tags"),
    ({"tags": ["a"], "add_tags": ["b"]}, "tags"),
    ({"add_tags": ["a", "\x07"]}, "add_tags.1"),
])
async def test_bad_tags_are_422_naming_each(client: TestClient[Any, Any], store: TicketStore,
                                            body: Any, key: str) -> None:
    result = await store.persist(message())
    error = assert_error(await patch(client, result.ticket_id, body, expect=422),
                         "invalid_tags")
    assert key in error.fields


async def test_adding_past_thirty_tags_is_refused(client: TestClient[Any, Any],
                                                  store: TicketStore) -> None:
    result = await store.persist(message())
    await patch(client, result.ticket_id, {"tags": [f"t{i}" for i in range(30)]})
    assert_error(await patch(client, result.ticket_id, {"add_tags": ["one more"]},
                             expect=422), "invalid_tags")


async def test_a_bad_tag_filter_is_400(client: TestClient[Any, Any]) -> None:
    response = await client.get("/api/v1/tickets", headers=AUTH, params={"tag": "x" * 51})
    assert response.status == 400
    assert "tag" in assert_error(await response.json(), "invalid_parameter").fields


async def test_unknown_tickets_are_404(client: TestClient[Any, Any]) -> None:
    assert_error(await patch(client, "nobody", {"tags": ["a"]}, expect=404),
                 "ticket_not_found")


async def test_fields_endpoint_serves_the_definitions(client: TestClient[Any, Any]) -> None:
    body = await (await client.get("/api/v1/fields", headers=AUTH)).json()
    assert [f["key"] for f in body["customer_fields"]] == ["member_level", "backup_phone"]
    resolution = next(f for f in body["ticket_fields"] if f["key"] == "resolution_code")
    assert resolution["required"] == "on_resolve" and resolution["desks"] == ["aftersales"]
    amount = next(f for f in body["ticket_fields"] if f["key"] == "refund_amount")
    assert (amount["min"], amount["max"]) == ("0", "100000")
    presales = await (await client.get("/api/v1/fields", headers=AUTH,
                                       params={"desk": "presales"})).json()
    assert "resolution_code" not in {f["key"] for f in presales["ticket_fields"]}
    response = await client.get("/api/v1/fields", headers=AUTH, params={"deks": "x"})
    assert response.status == 400


async def test_customer_fields_are_checked_and_shown_stale(
        client: TestClient[Any, Any], store: TicketStore, tmp_path: Path) -> None:
    result = await store.persist(message())
    path = f"/api/v1/customers/{result.customer_id}"
    response = await client.patch(path, headers=AUTH, json={"fields": {
        "member_level": "gold", "backup_phone": "12", "city": "上海"}})
    assert response.status == 422
    error = assert_error(await response.json(), "invalid_fields")
    assert set(error.fields) == {"member_level", "backup_phone", "city"}
    response = await client.patch(path, headers=AUTH, json={"fields": {
        "member_level": "vip", "backup_phone": "021 6233 1234"}})
    assert response.status == 200, await response.text()
    assert (await response.json())["fields"] == {"member_level": "vip",
                                                 "backup_phone": "+862162331234"}
    store.tickets = tickets_config(tmp_path, CONFIG.replace("options: [normal, vip]",
                                                            "options: [normal, gold]"))
    shown = await (await client.get(path, headers=AUTH)).json()
    assert shown["fields"]["member_level"] == {"value": "vip", "stale": True}


def test_without_customer_fields_configured_they_stay_free_form() -> None:
    free = FieldSet(None)
    assert free.merge({"a": 1}, {"a": None, "b": {"x": 1}}) == {"b": {"x": 1}}
    assert free.shown({"b": 2}) == {"b": 2}


def test_on_create_fields_are_required_when_an_agent_creates_a_ticket(tmp_path: Path) -> None:
    fields = tickets_config(tmp_path, CONFIG.replace(
        "{key: quantity, label: 数量, type: number, min: 1, max: 99}",
        "{key: quantity, label: 数量, type: number, min: 1, max: 99, required: on_create}"),
    ).ticket_field_set
    with pytest.raises(FieldsInvalid) as caught:
        fields.merge(None, {"gift": True}, desk="aftersales", creating=True)
    assert caught.value.problems == {"quantity": "required"}
    assert fields.merge(None, {"quantity": 2}, creating=True) == {"quantity": 2}
    assert fields.merge(None, {"gift": True}) == {"gift": True}  # later writes: not required


def test_missing_on_resolve_reads_rows_and_views(tmp_path: Path) -> None:
    fields = tickets_config(tmp_path).ticket_field_set

    from types import SimpleNamespace

    def ticket(desk: str, values: dict[str, Any]) -> Any:
        return SimpleNamespace(desk=desk, fields=values)

    stale = {"resolution_code": {"value": "gone", "stale": True}}
    assert missing_on_resolve(ticket("aftersales", stale), fields) == ["resolution_code"]
    assert missing_on_resolve(ticket("aftersales", {"resolution_code": "explained"}),
                              fields) == []
    assert missing_on_resolve(ticket("presales", {}), fields) == []


def test_the_migration_fills_ticket_tags_from_the_tags_tickets_have(tmp_path: Path) -> None:
    from alembic import command
    from sqlalchemy import create_engine, text

    from ticket_core.db import alembic_config

    url = f"sqlite:///{tmp_path}/old.sqlite3"
    command.upgrade(alembic_config(url), "0006")
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO customers (id, name, created_at, updated_at, vip_level) "
            "VALUES ('c1', NULL, '2026-01-01 00:00:00', '2026-01-01 00:00:00', 0)"))
        for i, tags in enumerate(('["VIP", "vip", "退款"]', '[]', '["Urgent"]')):
            connection.execute(text(
                "INSERT INTO tickets (id, number, channel, account, status, priority, tags, "
                "customer_id, created_at, updated_at) VALUES (:id, :n, 'webform', 'contact', "
                "'new', 'normal', :tags, 'c1', '2026-01-01 00:00:00', '2026-01-01 00:00:00')"),
                {"id": f"t{i}", "n": 1001 + i, "tags": tags})
    command.upgrade(alembic_config(url), "head")
    with engine.connect() as connection:
        rows = connection.execute(text(
            "SELECT ticket_id, tag FROM ticket_tags ORDER BY ticket_id, tag")).all()
        fields = connection.execute(text("SELECT fields FROM tickets")).scalars().all()
    engine.dispose()
    assert [tuple(r) for r in rows] == [("t0", "vip"), ("t0", "退款"), ("t2", "urgent")]
    assert fields == [None, None, None]
