"""The sender is looked up only for messages whose decision reads `customer.*`: those reaching,
before or at their match, a route that reads the customer (`RuleSet.decide_unless_customer`)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import REGISTRY

from intake.cli import main
from intake.config import load_document
from intake.message import Message
from router.consume import route_batch_handler
from router.reload import RulesHolder
from router.rules import load_rules
from router.service import DIRECTORY, RULES, post_explain

from . import test_lookup
from .conftest import RulesFrom, make_message
from .test_consume import RecordingBus
from .test_lookup import LOOKUP_BOUND, TOKEN, VIP, FakeCore, Served

served = test_lookup.served  # the fixture: a real aiohttp server as the ticket core
EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "intake.example.yaml"

# A complaint is decided before the VIP route; a route reading the customer after a conjunct
# that is false for most messages; one filed under another channel.
LAZY = """
- id: hotline_vip
  when: "text contains 'VIP专线' and customer.vip_level >= 1"
  desk: sales
- id: wechat_known
  match: {channel: wechat}
  when: "customer.known"
  desk: sales
- id: complaints
  when: "form.fields.topic == 'complaint'"
  desk: aftersales
  skill_group: complaints
- id: vip
  when: "customer.vip_level >= 3"
  desk: sales
"""


def topic(value: str, **fields: Any) -> Message:
    return make_message(form={"form_id": "contact", "fields": {"topic": value}}, **fields)


def test_a_message_matched_before_any_customer_route_needs_no_lookup(
        rules_from: RulesFrom) -> None:
    rules = rules_from(LAZY)
    decision = rules.decide_unless_customer(topic("complaint"))
    assert decision is not None and decision.route == "complaints"
    assert decision.customer is not None and decision.customer.lookup == "skipped"
    # The routes before it that read the customer were false by another conjunct (or filed
    # under another channel), and the record names that one, not the unknown customer key.
    failed = {t.route: t.failed for t in decision.tried}
    assert failed["hotline_vip"] == "text contains 'VIP专线'"
    assert failed["wechat_known"] == "channel == 'wechat'"


def test_a_message_reaching_a_customer_route_needs_the_lookup(rules_from: RulesFrom) -> None:
    rules = rules_from(LAZY)
    assert rules.decide_unless_customer(topic("enquiry")) is None  # reaches `vip`
    # A customer route before the match whose other conjunct held: decided with the customer.
    assert rules.decide_unless_customer(topic("complaint", text="VIP专线 投诉")) is None
    assert rules.decide(topic("complaint", text="VIP专线 投诉"), {"vip_level": 1}).route \
        == "hotline_vip"
    # Its channel's plan holds the wechat route: a wechat message needs it.
    wechat = make_message(channel="wechat", account="wx1", kind="message",
                          idempotency_key="wechat:wx1:1", form=None)
    assert rules.decide_unless_customer(wechat) is None


def test_rules_reading_no_customer_key_never_need_it(rules_from: RulesFrom) -> None:
    rules = rules_from("""
    - id: complaints
      when: "form.fields.topic == 'complaint'"
      desk: aftersales
    """)
    assert not rules.reads_customer
    decision = rules.decide_unless_customer(topic("enquiry"))
    assert decision is not None and decision.route == "default"


def test_a_split_sticky_by_a_customer_key_needs_the_lookup(rules_from: RulesFrom) -> None:
    rules = rules_from("""
    - id: complaints
      when: "form.fields.topic == 'complaint'"
      desk: aftersales
    - id: ab
      when: "form.fields.topic == 'enquiry'"
      mode: split
      sticky_by: customer.id
      deliveries:
        - {desk: sales, weight: 50}
        - {desk: general, weight: 50}
    """)
    assert rules.reads_customer
    assert rules.decide_unless_customer(topic("enquiry")) is None
    assert rules.decide_unless_customer(topic("complaint")) is not None


def test_a_decision_without_the_customer_is_the_one_with_any_customer() -> None:
    """Soundness on the example: whenever no lookup is made, every customer snapshot gives the
    same route and desks; and the lookup is saved for some messages, not for none."""
    rules = load_rules(load_document(EXAMPLE), EXAMPLE.read_bytes())
    assert rules.reads_customer
    customers: list[dict[str, Any] | None] = [
        None, {"id": "c1", "vip_level": 0}, {"id": "c2", "vip_level": 5, "language": "en"}]
    texts = ["我要投诉你们门店的服务，否则找媒体曝光", "请开发票", "报价多少", "店员态度差，给差评",
             ""]
    topics = ["complaint", "suggestion", "after_sales", "enquiry"]
    channels = [("webform", "contact"), ("email", "support"), ("wechat", "wx1111111111111111"),
                ("sdk", "demo-widget")]
    saved = needed = 0
    for text, form_topic, (channel, account) in itertools.product(texts, topics, channels):
        message = make_message(
            channel=channel, account=account, text=text,
            form={"form_id": "contact", "fields": {"topic": form_topic}},
            received_at="2026-01-05T14:00:00Z")
        lazy = rules.decide_unless_customer(message)
        if lazy is None:
            needed += 1
            continue
        saved += 1
        assert lazy.customer is not None and lazy.customer.lookup == "skipped"
        for customer in customers:
            eager = rules.decide(message, customer, lookup="hit" if customer else "miss")
            assert (eager.route, eager.deliveries) == (lazy.route, lazy.deliveries), message
    assert saved and needed


def lookups(result: str) -> float:
    return REGISTRY.get_sample_value("intake_router_customer_lookup_total",
                                     {"service": "router", "result": result}) or 0.0


async def test_the_router_asks_the_ticket_core_only_when_the_decision_needs_it(
        served: Served, write_rules: Callable[..., Path]) -> None:
    core, _, directory = served
    core.known["email:vip@example.com"] = VIP
    holder = RulesHolder(write_rules(LAZY, declarations=LOOKUP_BOUND))
    holder.load()
    bus = RecordingBus()
    handle = route_batch_handler(holder, bus, directory)
    skipped_before, hit_before = lookups("skipped"), lookups("hit")
    complaint = topic("complaint", idempotency_key="webform:contact:c1")
    vip = topic("enquiry", idempotency_key="webform:contact:v1", sender={
        "identities": [{"kind": "email", "value": "vip@example.com"}]})
    stranger = topic("enquiry", idempotency_key="webform:contact:s1", sender={
        "identities": [{"kind": "email", "value": "new@example.com"}]})
    await handle([complaint, vip, stranger])
    # Two requests: the complaint is decided before the VIP route, without asking.
    assert sorted(core.requests) == [["email:new@example.com"], ["email:vip@example.com"]]
    routed = [(key, orjson.loads(body)["route"]) for _, key, body, _ in bus.published]
    assert [(key, r["route"], r["customer"]["lookup"]) for key, r in routed] == [
        ("aftersales", "complaints", "skipped"), ("sales", "vip", "hit"),
        ("general", "default", "miss")]
    assert lookups("skipped") - skipped_before == 1
    assert lookups("hit") - hit_before == 1
    # A complaint alone, in a batch of one: still no request.
    await handle([topic("complaint", idempotency_key="webform:contact:c2")])
    assert len(core.requests) == 2
    # The VIP again: answered from the cache (`CustomerDirectory.known`), no request either.
    await handle([vip.model_copy(update={"idempotency_key": "webform:contact:v2"})])
    assert len(core.requests) == 2
    last = orjson.loads(bus.published[-1][2])["route"]
    assert (last["route"], last["customer"]["lookup"]) == ("vip", "hit")


async def test_a_hanging_ticket_core_delays_only_the_messages_that_need_it(
        served: Served, write_rules: Callable[..., Path]) -> None:
    core, _, directory = served
    holder = RulesHolder(write_rules(LAZY, declarations=LOOKUP_BOUND))
    holder.load()
    bus = RecordingBus()
    handle = route_batch_handler(holder, bus, directory)
    core.delay = 2.0  # hangs past the bound
    await handle([topic("complaint", idempotency_key="webform:contact:c3"),
                  topic("enquiry", idempotency_key="webform:contact:e3", sender={
                      "identities": [{"kind": "email", "value": "slow@example.com"}]})])
    results = [orjson.loads(body)["route"]["customer"]["lookup"]
               for _, _, body, _ in bus.published]
    assert results == ["skipped", "timeout"]
    assert core.requests == [["email:slow@example.com"]]


def test_the_example_decides_a_form_complaint_without_the_customer() -> None:
    """The example reads `customer.vip_level` after its complaint routes: a complaint through
    the form is decided without a lookup."""
    rules = load_rules(load_document(EXAMPLE), EXAMPLE.read_bytes())
    decision = rules.decide_unless_customer(topic("complaint", text="我要投诉你们门店的服务"))
    assert decision is not None and decision.route == "complaints"
    assert rules.decide_unless_customer(topic("enquiry", text="请开发票")) is None


@contextlib.contextmanager
def core_in_a_thread(core: FakeCore) -> Iterator[str]:
    """The stand-in ticket core on a loop of its own: `intake route explain` runs its own."""
    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_get("/api/v1/customers", core.handle)
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.run_until_complete(runner.cleanup())
        loop.close()


def bounded_example(tmp_path: Path) -> Path:
    """The example with the lookup bound of LOOKUP_BOUND (it sets no options of its own)."""
    path = tmp_path / "example.yaml"
    path.write_text("options:\n  customer_lookup: {timeout: 500ms}\n"
                    + EXAMPLE.read_text(encoding="utf-8"), encoding="utf-8")
    return path


def explain(capsys: pytest.CaptureFixture[str], tmp_path: Path, message: Message) -> str:
    path = tmp_path / "msg.json"
    path.write_text(message.model_dump_json(), encoding="utf-8")
    assert main(["route", "explain", str(path), "--rules", str(bounded_example(tmp_path))]) == 0
    return capsys.readouterr().out


def test_route_explain_without_a_customer_looks_the_sender_up_as_the_router_does(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    core = FakeCore()
    with core_in_a_thread(core) as url:
        monkeypatch.setenv("INTAKE_TICKET_CORE_URL", url)
        monkeypatch.setenv("INTAKE_API_TOKEN", TOKEN)
        out = explain(capsys, tmp_path, topic("enquiry", text="请开发票"))
        assert "route vip," in out and "customer lookup hit, id cus_1" in out
        assert core.requests == [["email:li@example.com"]]
        # A complaint is decided before the VIP route: no request.
        out = explain(capsys, tmp_path, topic("complaint", text="我要投诉"))
        assert "customer lookup skipped" in out and len(core.requests) == 1
    # No ticket core at all: decided all the same, and the record says so.
    monkeypatch.setenv("INTAKE_TICKET_CORE_URL", url)
    out = explain(capsys, tmp_path, topic("enquiry", text="请开发票"))
    assert "customer lookup error" in out and "route default," in out


async def test_explain_without_a_customer_looks_the_sender_up_as_the_router_does(
        served: Served, tmp_path: Path) -> None:
    core, _, directory = served
    holder = RulesHolder(bounded_example(tmp_path))
    holder.load()
    app = web.Application()
    app[RULES] = holder
    app[DIRECTORY] = directory
    app.router.add_post("/explain", post_explain)
    async with TestClient(TestServer(app)) as client:
        enquiry = topic("enquiry", text="请开发票").model_dump(mode="json")
        body = await (await client.post("/explain", json=enquiry)).json()
        assert (body["route"], body["customer"]["lookup"]) == ("vip", "hit")
        assert all("saw" in t for t in body["tried"])  # every route, with what it saw
        complaint = topic("complaint", text="我要投诉").model_dump(mode="json")
        body = await (await client.post("/explain", json=complaint)).json()
        assert (body["route"], body["customer"]["lookup"]) == ("complaints", "skipped")
    assert core.requests == [["email:li@example.com"]]
