"""`GET /rules` over HTTP (with `refused`), `intake config check` on the routing sections, and
the router refusing to start with a wrong rules file."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from intake.cli import main
from router.reload import RulesHolder
from router.service import RULES, get_rules

from .conftest import DECLARATIONS, rules_text

REPO = Path(__file__).resolve().parents[2]
# The example's escalations name its own desks: a rules file with other desks drops them.
OWN = "escalations: []\n"
GOOD = "- id: r\n  when: \"text contains '退款'\"\n  desk: sales"
SHADOWED = "- id: a\n  desk: sales\n- id: b\n  when: \"text contains 'x'\"\n  desk: aftersales"
FAILING = GOOD + "\n  tests:\n    - {name: refund, message: {text: 我要退款}, expect: {route: s}}"


async def test_get_rules_shows_the_rules_in_force_and_a_refused_change(
        write_rules: Callable[..., Path]) -> None:
    path = write_rules(GOOD)
    holder = RulesHolder(path)
    holder.load()
    app = web.Application()
    app[RULES] = holder
    app.router.add_get("/rules", get_rules)
    async with TestClient(TestServer(app)) as client:
        body = await (await client.get("/rules")).json()
        assert {"revision", "label", "loaded_at", "source", "warnings", "desks",
                "skill_groups", "strategies", "categories", "calendars", "sla_policies",
                "escalations", "routes", "default_route", "refused"} <= set(body)
        assert body["refused"] is None
        assert [(r["id"], r["when"]) for r in body["routes"]] == [("r", "text contains '退款'")]
        revision = body["revision"]
        path.write_text(rules_text(SHADOWED), encoding="utf-8")
        assert holder.check() is False
        body = await (await client.get("/rules")).json()
        assert body["revision"] == revision  # the rules in force stay in force
        assert "every message it matches is taken first by route(s) a" in str(body["refused"])
        path.write_text(rules_text(GOOD.replace("sales", "aftersales")), encoding="utf-8")
        assert holder.check() is True
        body = await (await client.get("/rules")).json()
        assert body["refused"] is None and body["revision"] != revision


@pytest.mark.parametrize(("routes", "reason"), [
    (SHADOWED, "every message it matches is taken first by route(s) a"),
    (FAILING, "test refund of route r: route: expected 's', got 'r'"),
])
def test_config_check_lints_and_tests_the_routing_sections(
        routes: str, reason: str, write_rules: Callable[..., Path],
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTAKE_RULES", str(write_rules(routes, declarations=OWN + DECLARATIONS)))
    assert main(["config", "check"]) == 1
    assert reason in capsys.readouterr().err
    monkeypatch.setenv("INTAKE_RULES", str(write_rules(GOOD, declarations=OWN + DECLARATIONS)))
    assert main(["config", "check"]) == 0


def test_the_router_does_not_start_with_a_wrong_rules_file(
        write_rules: Callable[..., Path], tmp_path: Path) -> None:
    path = write_rules(SHADOWED, declarations=OWN + DECLARATIONS)
    done = subprocess.run(
        [str(Path(sys.executable).parent / "intake"), "run", "router"], cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "INTAKE_RULES": str(path), "INTAKE_DATA_DIR": str(tmp_path),
             "INTAKE_ROUTER_PORT": "0"},
        capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert f"{path}:18: routes.1: every message it matches is taken first by route(s) a" \
        in done.stderr

