"""The YAML config (`intake config check`), the rules language (`match`, `when`, lint, inline
tests), the common message, /explain (with a customer snapshot)."""

from __future__ import annotations

import dataclasses
import json
import tempfile
import uuid
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web
from hypothesis import strategies as st
from pydantic import ValidationError

from intake.cli import check_config
from intake.config import load_document
from intake.errors import ConfigInvalid
from intake.message import Message
from intake.settings import REPO_ROOT, IntakeSettings
from router.reload import RulesHolder
from router.rules import OPERATORS, analyse, load_rules
from router.service import RULES, post_explain

from .edge import Edge, app_client
from .harness import Target, hostile_text

EXAMPLE = REPO_ROOT / "deploy" / "intake.example.yaml"
EXAMPLE_LINES = EXAMPLE.read_text(encoding="utf-8").splitlines()
WORK = Path(tempfile.mkdtemp(prefix="intake-fuzz-"))
SECTIONS = ("calendars", "desks", "skill_groups", "categories", "sla_policies", "escalations",
            "routes", "default_route", "channels", "unknown")
PATHS = ("subject", "text", "channel", "account", "kind", "form.fields.topic", "form.fields",
         "sender.identities.value", "sender.identities.kind", "attachments.filename", "flags",
         "thread.subject", "channel_data.x", "route.tried", "a..b", "", " ", "subject.x",
         "form.fields.0", "attachments.0.size", "nonsense", "call.duration_s")
REGEXES = ("(", "[", "(?P<x>a)(?P<x>b)", "\\", "(a+)+$", "(a|a)*$", ".*", "(?i)报价|quote",
           "^$", "\\d{3,}", "(?<=a)b", "a{1000000}", "[^\\x00-\\x7f]", "(?x) # comment",
           ".*refund.*order", "(a)\\1", "a++", "(?>a)", "\\Z", "\\x{4e00}", "\\p{Han}+",
           "(?m)^a$", "(?U)a+b", "(?s)a.b", "(?i)É", "\\C", "\\b\\w+\\b", "a{2,}?$")
# `when` expressions: valid ones of every kind, near misses, and the parser's edge cases.
WHENS = ("text contains '投诉'", "channel == 'email' and not in_business_hours('always')",
         "customer.vip_level >= 3 or sender.phone exists", "flags has 'bounce'",
         "(a == 1", "custmer.vip_level > 1", "nope('x')", "text matches '(a)\\1'",
         "subject matches '(?i)报价' and len(text) > 3", "lower(sender.email) in ['a@b.cn']",
         "channel == 'email' and channel == 'sdk'", "true", "false", "not not not true",
         "'\\u4e2d' == text", "form.fields.topic not in []", "local_time('cal') > '09:00'",
         "((((((((((text))))))))))", "x" * 300, "a" + " and a" * 200,
         "text contains '" + "\\" * 50 + "'", "is_workday('always') and is_holiday('always')")
ids = st.one_of(st.sampled_from(["general", "aftersales", "sales", "complaints",
                                 "general_frontline", "inquiry", "x", "default"]),
                hostile_text(12))
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                    hostile_text(20))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(hostile_text(8), inner, max_size=3)),
    max_leaves=8)


@st.composite
def conditions(draw: st.DrawFn) -> dict[str, Any]:
    condition: dict[str, Any] = {"field": draw(st.one_of(st.sampled_from(PATHS),
                                                         hostile_text(15)))}
    for op in draw(st.lists(st.sampled_from((*OPERATORS, "nope")), min_size=0, max_size=2)):
        condition[op] = draw(st.one_of(st.sampled_from(REGEXES), hostile_text(20))
                             if op == "matches" else values)
    return condition


@st.composite
def targets_of(draw: st.DrawFn) -> dict[str, Any]:
    target: dict[str, Any] = {"desk": draw(ids)}
    for key, strategy in (("skill_group", ids), ("priority", st.sampled_from(
            ["low", "normal", "high", "urgent", "URGENT", 3])), ("category", ids),
            ("tags", st.lists(hostile_text(8), max_size=3)),
            ("mode", st.sampled_from(["single", "multi", "primary_secondary", "split", "x"])),
            ("deliveries", st.lists(st.fixed_dictionaries(
                {"desk": ids}, optional={"role": st.sampled_from(
                    ["owner", "copy", "primary", "collaborator", "overflow", "boss"])}),
                max_size=3)), ("sla", ids)):
        if draw(st.integers(0, 3)) == 0:
            target[key] = draw(strategy)
    return target


@st.composite
def routing(draw: st.DrawFn) -> dict[str, Any]:
    routes = []
    for _ in range(draw(st.integers(0, 4))):
        route = {"id": draw(ids), **draw(targets_of())}
        if draw(st.integers(0, 2)) == 0:
            route["when"] = draw(st.one_of(st.sampled_from(WHENS), hostile_text(30)))
        if draw(st.booleans()):
            route["match"] = {"where": draw(st.lists(conditions(), max_size=3))}
            for key, strategy in (("channel", st.sampled_from(["webform", "email", "fax"])),
                                  ("kind", st.sampled_from(["message", "form_submission", 1])),
                                  ("account", ids)):
                if draw(st.booleans()):
                    route["match"][key] = draw(strategy)
        routes.append(route)
    data: dict[str, Any] = {
        "desks": [{"id": d, "name": d} for d in ("general", "aftersales", "sales")],
        "skill_groups": [{"id": "complaints", "desk": "aftersales"}],
        "categories": [{"id": "inquiry", "name": "咨询"}],
        "routes": routes,
    }
    if draw(st.integers(0, 5)):
        data["default_route"] = draw(targets_of())
    for _ in range(draw(st.integers(0, 2))):
        data[draw(st.sampled_from(SECTIONS))] = draw(values)
    return data


@st.composite
def config_texts(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["structured", "structured", "mutated", "text"]))
    if kind == "structured":
        return yaml.safe_dump(draw(routing()), allow_unicode=draw(st.booleans()))
    if kind == "mutated":
        lines = list(EXAMPLE_LINES)
        for _ in range(draw(st.integers(1, 4))):
            index = draw(st.integers(0, len(lines) - 1))
            action = draw(st.sampled_from(["replace", "delete", "indent", "insert"]))
            if action == "replace":
                lines[index] = draw(hostile_text(40))
            elif action == "delete":
                del lines[index]
            elif action == "indent":
                lines[index] = " " * draw(st.integers(0, 9)) + lines[index].lstrip()
            else:
                lines.insert(index, draw(st.sampled_from(
                    ["  - &a {id: x}", "    <<: *a", "  ? complex", "!!binary x", "%TAG ! x",
                     "---", "...", "    extra: ${NOT_SET_ANYWHERE}", "\t- tab"])))
        return "\n".join(lines)
    return draw(hostile_text(200))


def check_config_text(text: str) -> None:
    path = WORK / "intake.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    problems = check_config(IntakeSettings(config=path))
    assert isinstance(problems, list) and all(isinstance(p, str) and p for p in problems)


MESSAGE = json.loads(Message(
    idempotency_key="webform:contact:1", channel="webform", account="contact",
    kind="form_submission", sender={"name": "Li", "identities": [
        {"kind": "email", "value": "li@example.cn"}]},
    subject="报价 please", text="hello", received_at="2026-01-01T00:00:00Z",
    form={"form_id": "contact", "fields": {"topic": "complaint"}}).model_dump_json())


@st.composite
def message_documents(draw: st.DrawFn) -> Any:
    data = json.loads(json.dumps(MESSAGE))
    for _ in range(draw(st.integers(0, 4))):
        key = draw(st.sampled_from([*MESSAGE.keys(), "unknown", "route", "call", "event"]))
        if draw(st.integers(0, 3)) == 0:
            data.pop(key, None)
        else:
            data[key] = draw(values)
    if draw(st.booleans()):
        data["subject"] = draw(hostile_text(80))
        data["text"] = draw(hostile_text(200))
    return data


@st.composite
def message_bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["mutated", "mutated", "bytes", "raw"]))
    if kind == "mutated":
        document = draw(message_documents())
        if draw(st.integers(0, 3)) == 0:  # `{message, customer}`, the customer as hostile as any
            document = {"message": document, "customer": draw(values)}
        return json.dumps(document, ensure_ascii=draw(st.booleans())).encode()
    if kind == "raw":
        return draw(st.sampled_from([
            b"[" * 100000 + b"]" * 100000, b'{"a":' * 5000 + b"1" + b"}" * 5000,
            b'{"schema_version": 1e999999}', b'{"schema_version": ' + b"1" * 10000 + b"}",
            json.dumps({**MESSAGE, "id": str(uuid.uuid4())}).encode()
            .replace(b'"text"', b'"text": "a", "text"'), b"\xff\xfe", b"", b"null"]))
    return draw(st.binary(max_size=300))


def check_message(body: bytes) -> None:
    try:
        message = Message.model_validate_json(body)
    except ValidationError:
        return
    again = Message.model_validate_json(message.model_dump_json())
    assert again == message


def check_rules(value: tuple[str, list[Any]]) -> None:
    text, messages = value
    path = WORK / "rules.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        rules = load_rules(load_document(path), text)
    except ConfigInvalid as exc:
        assert exc.problems and all(isinstance(p, str) for p in exc.problems)
        return
    analysis = analyse(load_document(path), text)  # lint and inline tests never crash
    assert all(f.code and f.message for f in analysis.findings)
    route_ids = {route.id for route in rules.routes} | {"default"}
    for i, document in enumerate(messages):
        try:
            message = Message.model_validate(document)
        except ValidationError:
            continue
        customer = {"vip_level": document.get("text"), "fields": document} if i % 2 else None
        decision = rules.decide(message, customer, max_tried=None)
        assert decision.route in route_ids, decision.route
        json.loads(decision.model_dump_json())


@st.composite
def screened_routes(draw: st.DrawFn) -> tuple[list[str], list[str]]:
    """Runs of pattern routes (screened) and subjects, for the screen-versus-each-route check."""
    patterns = draw(st.lists(st.one_of(st.sampled_from(REGEXES), hostile_text(12)),
                             min_size=4, max_size=12))
    subjects = draw(st.lists(st.one_of(hostile_text(60), st.sampled_from(
        ["refund " * 1500, "refund order", "中文", "aaab", "a\nb", ""])), min_size=1,
        max_size=4))
    return patterns, subjects


def check_screens(value: tuple[list[str], list[str]]) -> None:
    patterns, subjects = value
    routes = [{"id": f"r{i}", "desk": "sales", "match": {"where": [
        {"field": "subject", "matches": pattern}]}} for i, pattern in enumerate(patterns)]
    text = yaml.safe_dump({"desks": [{"id": "sales", "name": "sales"}], "routes": routes,
                           "default_route": {"desk": "sales"}}, allow_unicode=True)
    path = WORK / "screens.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        # Not linted: a run of the same pattern twice is a shadowed route, still worth screening.
        rules = load_rules(load_document(path), text.encode("utf-8", "surrogatepass"),
                           lint=False)
    except ConfigInvalid:
        return
    # Screened routes are not in `always`: without screens they are tried one by one.
    unscreened = dataclasses.replace(rules, plans={channel: dataclasses.replace(
        plan, screens=(), always=tuple(sorted(
            [*plan.always, *(r for screen in plan.screens for r in screen.routes)],
            key=lambda route: route.position)))
        for channel, plan in rules.plans.items()})
    for subject in subjects:
        message = Message.model_validate({**MESSAGE, "subject": subject})
        one_by_one = next((route.id for route in rules.routes
                           if all(c.test(message) for c in route.conditions)), "default")
        decided = rules.decide(message, full=True)
        assert decided.route == one_by_one, (subject, patterns)
        assert decided.tried == unscreened.decide(message, full=True).tried, (subject, patterns)


async def _router_client() -> Any:
    holder = RulesHolder(EXAMPLE)
    holder.load()
    app = web.Application()
    app[RULES] = holder
    app.router.add_post("/explain", post_explain)
    return await app_client(app)


ROUTER = Edge(_router_client)


def check_explain(body: bytes) -> None:
    status, _, answer = ROUTER.request("POST", "/explain", data=body,
                                       headers={"Content-Type": "application/json"})
    assert status in (200, 422), (status, answer[:300])
    if status == 200:
        assert json.loads(answer)["route"], answer[:300]


def targets() -> list[Target]:
    return [
        Target("config_check", config_texts(), check_config_text, scale=0.2),
        Target("rules_language", st.tuples(
            st.builds(lambda d: yaml.safe_dump(d, allow_unicode=True), routing()),
            st.lists(message_documents(), max_size=3)), check_rules, scale=0.5),
        Target("rule_screens", screened_routes(), check_screens, scale=0.3),
        Target("message_json", message_bodies(), check_message),
        Target("router_explain", message_bodies(), check_explain),
    ]
