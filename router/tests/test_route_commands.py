"""`intake route check|lint|test|explain`, reload refusing lint errors and failing tests, the
router's metrics, and `/explain` with a customer snapshot."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import REGISTRY

from intake.cli import main
from router.reload import RulesHolder
from router.service import RULES, post_explain

from .conftest import make_message, rules_text

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "intake.example.yaml"
GOOD = "- id: r\n  when: \"text contains '退款'\"\n  desk: sales\n  tests:\n" \
       "    - {name: refund, message: {text: 我要退款}, expect: {route: r}}"
FAILING = GOOD.replace("expect: {route: r}", "expect: {route: r, category: complaint}")
SHADOWED = "- id: a\n  desk: sales\n- id: b\n  when: \"text contains 'x'\"\n  desk: aftersales"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_check_passes_the_example_and_names_what_it_ran(
        capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "route", "check", str(EXAMPLE))
    assert code == 0
    assert out.startswith(f"{EXAMPLE}: OK (14 routes, 18 inline tests passed")


def test_check_fails_on_a_failing_test(write_rules: Callable[..., Path],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "route", "check", str(write_rules(FAILING)))
    assert code == 1
    assert "test refund of route r: category: expected 'complaint', got None" in err


def test_lint_json_lists_every_finding_with_its_line(write_rules: Callable[..., Path],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    path = write_rules(SHADOWED + "\n- id: c\n  when: \"nope('x')\"\n  desk: sales")
    code, out, _ = run(capsys, "route", "lint", str(path), "--format", "json")
    assert code == 1
    found = json.loads(out)["findings"]
    assert {"severity": "error", "code": "unknown-function", "route": "c",
            "line": 21} in [{k: f[k] for k in ("severity", "code", "route", "line")}
                            for f in found]
    # A route that does not compile stops the lint of the rest: fix it, lint again.
    path.write_text(rules_text(SHADOWED), encoding="utf-8")
    code, out, _ = run(capsys, "route", "lint", str(path), "--format", "json")
    assert code == 1
    shadowed = next(f for f in json.loads(out)["findings"] if f["code"] == "shadowed-route")
    assert (shadowed["route"], shadowed["line"]) == ("b", 17)  # where route b begins


def test_test_prints_one_line_per_test(write_rules: Callable[..., Path],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "route", "test", str(write_rules(GOOD)))
    assert (code, out.splitlines()) == (0, ["ok   r / refund", "1 passed, 0 failed"])
    code, out, _ = run(capsys, "route", "test", str(write_rules(FAILING)))
    assert code == 1 and out.splitlines()[0].startswith("FAIL r / refund: category: expected")


def test_explain_prints_the_decision_offline(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    message = make_message(text="我要投诉你们门店的服务，否则找媒体曝光")
    path = tmp_path / "msg.json"
    path.write_text(json.dumps({"message": message.model_dump(mode="json"),
                                "customer": {"id": "c9", "vip_level": 1}}), encoding="utf-8")
    code, out, _ = run(capsys, "route", "explain", str(path), "--rules", str(EXAMPLE))
    assert code == 0
    assert "  ✗ bounces: channel == 'email'   saw channel = \"webform\"" in out
    assert "route warned_complaint, mode single, priority urgent" in out
    assert "customer lookup hit, id c9" in out
    assert "first response due 2026-01-02 11:34 Asia/Shanghai (03:34Z)" in out
    assert "step supervisor_pickup → complaints/sg_hotline_supervisors" in out
    code, out, _ = run(capsys, "route", "explain", str(path), "--rules", str(EXAMPLE),
                       "--format", "json")
    assert json.loads(out)["escalation"]["timeline"] == "warned_complaint"


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, {"service": "router", **labels}) or 0.0


def test_reload_refuses_a_shadowed_route_or_failing_test_and_counts_it(
        write_rules: Callable[..., Path]) -> None:
    path = write_rules(GOOD)
    holder = RulesHolder(path)
    first = holder.load()
    for bad in (SHADOWED, FAILING):
        refused = metric("intake_router_rules_reload_total", result="refused")
        path.write_text(rules_text(bad), encoding="utf-8")
        assert holder.check() is False
        assert holder.current is first
        assert holder.last_error
        assert metric("intake_router_rules_reload_total", result="refused") == refused + 1
    ok = metric("intake_router_rules_reload_total", result="ok")
    path.write_text(rules_text(GOOD.replace("desk: sales", "desk: aftersales")),
                    encoding="utf-8")
    assert holder.check() is True and holder.last_error is None
    assert metric("intake_router_rules_reload_total", result="ok") == ok + 1


async def test_explain_takes_a_customer_snapshot() -> None:
    holder = RulesHolder(EXAMPLE)
    holder.load()
    app = web.Application()
    app[RULES] = holder
    app.router.add_post("/explain", post_explain)
    message = make_message(text="退货", form=None, kind="message").model_dump(mode="json")
    async with TestClient(TestServer(app)) as client:
        vip = await client.post("/explain", json={"message": message,
                                                  "customer": {"id": "c1", "vip_level": 4}})
        assert vip.status == 200
        body = await vip.json()
        assert (body["route"], body["customer"]["lookup"]) == ("vip", "hit")
        assert body["tried"][-1]["saw"] == {"customer.vip_level": 4}
        plain = await (await client.post("/explain", json=message)).json()
        assert (plain["route"], plain["customer"]["lookup"]) == ("default", "skipped")
        bad = await client.post("/explain", json={"message": message, "customer": 3})
        assert bad.status == 422


async def test_routed_messages_are_counted_by_route(write_rules: Callable[..., Path]) -> None:
    from router.consume import route_message

    holder = RulesHolder(write_rules(GOOD))
    rules = holder.load()
    before = metric("intake_router_decisions_total", route="r")
    desk, routed = await route_message(make_message(text="我要退款"), rules)
    assert desk == "sales" and routed.route is not None and routed.route.route == "r"
    assert metric("intake_router_decisions_total", route="r") == before + 1


def test_lint_json_reports_model_errors_as_findings(write_rules: Callable[..., Path],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    path = write_rules("- id: r\n  match:\n    where: [{field: text, matches: '(a)\\1'}]\n"
                       "  desk: sales\n- id: s\n  priorty: high\n  desk: sales")
    code, out, _ = run(capsys, "route", "lint", str(path), "--format", "json")
    assert code == 1
    found = [(f["code"], f["route"]) for f in json.loads(out)["findings"]]
    assert found == [("bad-regex", "#1"), ("unknown-key", "#2")]
