"""`intake route check|lint|test|explain`: a rules file checked and a decision shown, offline;
`intake route replay`: candidate rules over the decisions the ticket core stored.

No broker, no ticket core: everything here is a pure function of the file, the message and
the customer snapshot given (none given: a `miss`, the router's lookup is not run offline).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import ValidationError

from intake.config import load_document
from intake.errors import ConfigInvalid
from intake.message import Message, RouteDecision

from .decide import RuleSet
from .load import Analysis, analyse, line_of


def _analyse(path: Path, *, lint: bool = True, run_tests: bool = True) -> Analysis:
    return analyse(load_document(path), path.read_bytes(), lint=lint, run_tests=run_tests)


def _structural(exc: ConfigInvalid) -> int:
    print(f"rules have {len(exc.problems)} problem(s):", file=sys.stderr)
    for problem in exc.problems:
        print(f"  {problem}", file=sys.stderr)
    return 1


def cmd_check(args: argparse.Namespace) -> int:
    """Validate, compile, lint, test; exit 1 on any error or failing test."""
    path = Path(args.file)
    try:
        analysis = _analyse(path)
    except ConfigInvalid as exc:
        return _structural(exc)
    problems = analysis.problems() + analysis.failed_tests()
    warnings = analysis.problems([f for f in analysis.findings if f.severity == "warning"])
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if problems:
        return _structural(ConfigInvalid(problems))
    tests = len(analysis.test_results)
    print(f"{path}: OK ({len(analysis.rules.routes) if analysis.rules else 0} routes, "
          f"{tests} inline test{'s' if tests != 1 else ''} passed, {len(warnings)} warning"
          f"{'s' if len(warnings) != 1 else ''})")
    return 0


def _structural_findings(problems: list[str]) -> list[dict[str, Any]]:
    """Problems the models found before lint could run, as findings (file:line: loc: reason)."""
    out = []
    for problem in problems:
        found = re.match(r"^(?:.*?):(\d+): ([\w.]+): (.*)$", problem)
        line, loc, message = (int(found.group(1)), found.group(2), found.group(3)) if found \
            else (None, "", problem)
        code = ("bad-regex" if "RE2" in message else "unknown-key" if "Extra inputs" in message
                else "bad-duration" if "not a duration" in message else "invalid")
        route = None
        parts = loc.split(".")
        if len(parts) > 1 and parts[0] == "routes" and parts[1].isdigit():
            route = f"#{int(parts[1]) + 1}"
        out.append({"severity": "error", "code": code, "route": route, "line": line,
                    "message": f"{loc}: {message}" if loc else message})
    return out


def cmd_lint(args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        analysis = _analyse(path, run_tests=False)
    except ConfigInvalid as exc:
        if args.format != "json":
            return _structural(exc)
        print(json.dumps({"findings": _structural_findings(exc.problems)}, ensure_ascii=False,
                         indent=2))
        return 1
    findings = [f.as_dict(line_of(analysis.doc, f.loc)) for f in analysis.findings]
    if args.format == "json":
        print(json.dumps({"findings": findings}, ensure_ascii=False, indent=2))
    else:
        for f in findings:
            route = f" route {f['route']}:" if f["route"] else ""
            print(f"{path}:{f['line'] or '?'}: {f['severity']} {f['code']}:{route} "
                  f"{f['message']}")
        if not findings:
            print(f"{path}: no findings")
    return 1 if analysis.errors else 0


def cmd_test(args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        analysis = _analyse(path, lint=False)
    except ConfigInvalid as exc:
        return _structural(exc)
    if analysis.errors:
        return _structural(ConfigInvalid(analysis.problems()))
    failed = 0
    for route, name, diffs in analysis.test_results:
        if diffs:
            failed += 1
            print(f"FAIL {route} / {name}: {'; '.join(diffs)}")
        else:
            print(f"ok   {route} / {name}")
    total = len(analysis.test_results)
    print(f"{total - failed} passed, {failed} failed")
    return 1 if failed else 0


def cmd_explain(args: argparse.Namespace) -> int:
    from intake.settings import IntakeSettings

    rules_path = Path(args.rules) if args.rules else (
        IntakeSettings().rules_path or IntakeSettings().config_path)
    try:
        analysis = _analyse(rules_path, lint=False, run_tests=False)
    except ConfigInvalid as exc:
        return _structural(exc)
    if analysis.rules is None:
        return _structural(ConfigInvalid(analysis.problems()))
    body: Any = json.loads(Path(args.file).read_text(encoding="utf-8"))
    customer = None
    if isinstance(body, dict) and "message" in body:
        customer = body.get("customer")
        body = body["message"]
    try:
        message = Message.model_validate(body)
    except ValidationError as exc:
        print(f"{args.file}: not a valid common message:", file=sys.stderr)
        for error in exc.errors():
            print(f"  {'.'.join(map(str, error['loc']))}: {error['msg']}", file=sys.stderr)
        return 1
    if customer is not None:
        decision = analysis.rules.decide(message, customer, max_tried=None)
    else:  # looked up in the ticket core as the router does, when the decision needs it
        decision = asyncio.run(_decide_looking_up(message, analysis.rules))
    if args.format == "json":
        print(decision.model_dump_json(indent=2))
    else:
        zone = _desk_zone(analysis, decision)
        print(render_text(decision, zone))
    return 0


async def _decide_looking_up(message: Message, rules: RuleSet) -> RouteDecision:
    from intake.settings import IntakeSettings

    from .consume import decide_in_full
    from .lookup import CustomerDirectory
    from .service import agent_token

    settings = IntakeSettings()
    directory = CustomerDirectory(settings.effective_ticket_core_url,
                                  lambda: agent_token(settings))
    try:
        return await decide_in_full(message, rules, directory)
    finally:
        await directory.close()


def _desk_zone(analysis: Analysis, decision: RouteDecision) -> ZoneInfo:
    rules = analysis.rules
    assert rules is not None
    desk = next((d for d in rules.config.desks if d.id == decision.deliveries[0].desk), None)
    calendar = rules.calendars.get(desk.calendar or "") if desk else None
    return calendar.zone if calendar else ZoneInfo("UTC")


def render_text(decision: RouteDecision, zone: ZoneInfo) -> str:
    """Each route tried, its failing condition and what it saw; then deliveries, SLA and
    escalation times in the desk's time zone and UTC."""
    def when(value: Any) -> str:
        if value is None:
            return "-"
        local = value.astimezone(zone)
        return f"{local:%Y-%m-%d %H:%M} {zone.key} ({value.astimezone(ZoneInfo('UTC')):%H:%M}Z)"

    lines = [f"revision {decision.revision[:12]}" + (f" ({decision.label})" if decision.label
                                                    else ""),
             f"received {when(decision.clock)}"]
    if decision.customer:
        lines.append(f"customer lookup {decision.customer.lookup}"
                     + (f", id {decision.customer.id}" if decision.customer.id else ""))
    for trial in decision.tried:
        saw = ", ".join(f"{k} = {json.dumps(v, ensure_ascii=False)}" for k, v in trial.saw.items())
        if trial.matched:
            lines.append(f"  ✓ {trial.route}" + (f"   saw {saw}" if saw else ""))
        else:
            lines.append(f"  ✗ {trial.route}: {trial.failed}" + (f"   saw {saw}" if saw else ""))
    lines.append(f"route {decision.route}, mode {decision.mode}, priority {decision.priority}"
                 + (f", category {decision.category}" if decision.category else "")
                 + (f", tags {', '.join(decision.tags)}" if decision.tags else ""))
    for d in decision.deliveries:
        lines.append(f"  → {d.desk}/{d.skill_group or '-'} ({d.role})"
                     + (f" after {d.after}, at {when(d.due)}" if d.after else ""))
    if decision.sla:
        sla = decision.sla
        lines.append(f"SLA {sla.policy}" + (f" (business hours, {sla.calendar})"
                                            if sla.business_hours else " (wall clock)"))
        lines.append(f"  first response due {when(sla.first_response_due)}")
        lines.append(f"  resolution due     {when(sla.resolution_due)}")
        for warning in sla.warnings:
            lines.append(f"  warning ({warning.target}) {when(warning.at)}")
    if decision.escalation:
        plan = decision.escalation
        lines.append(f"escalation {plan.timeline}, deadline {when(plan.deadline)}"
                     + (f", hard deadline {when(plan.hard_deadline)}" if plan.hard_deadline
                        else ""))
        for step in plan.steps:
            target = f" → {step.target.desk}/{step.target.skill_group}" if step.target else ""
            lines.append(f"  step {step.id}{target}, due {when(step.due)}")
    return "\n".join(lines)


def cmd_replay(args: argparse.Namespace) -> int:
    """The candidate (`--rules`) and the rules in force (`--old`) over the stored traffic."""
    import asyncio

    from intake.settings import IntakeSettings

    from .replay import ReplayUnavailable, render, replay, stored_decisions
    from .service import agent_token

    if not args.rules or not args.since:
        print("replay needs --rules CANDIDATE and --since TIME", file=sys.stderr)
        return 2
    settings = IntakeSettings()
    loaded = []
    for path in (Path(args.rules), Path(args.old) if args.old else (
            settings.rules_path or settings.config_path)):
        try:
            analysis = _analyse(path, lint=False, run_tests=False)
        except ConfigInvalid as exc:
            return _structural(exc)
        if analysis.rules is None:
            return _structural(ConfigInvalid(analysis.problems()))
        loaded.append(analysis.rules)
    new, old = loaded

    async def collect() -> list[dict[str, Any]]:
        return [item async for item in stored_decisions(
            settings.effective_ticket_core_url, agent_token(settings), args.since, args.until)]

    try:
        items = asyncio.run(collect())
    except (ReplayUnavailable, OSError) as exc:
        print(f"replay: no stored decisions: {exc}", file=sys.stderr)
        return 1
    report = replay(items, old, new)
    print(json.dumps(report, ensure_ascii=False, indent=2) if args.format == "json"
          else render(report))
    return 0


def cmd_route(args: argparse.Namespace) -> int:
    if args.action != "replay" and not args.file:
        print(f"intake route {args.action} needs a FILE", file=sys.stderr)
        return 2
    command = {"check": cmd_check, "lint": cmd_lint, "test": cmd_test,
               "explain": cmd_explain, "replay": cmd_replay}[args.action]
    return command(args)


def add_route_command(sub: Any) -> None:
    route = sub.add_parser("route", help="check, lint, test a rules file; explain a decision")
    route.add_argument("action", choices=["check", "lint", "test", "explain", "replay"])
    route.add_argument("file", nargs="?", help="check/lint/test: the rules (or config) file; "
                       "explain: a message, or {message, customer}, as JSON")
    route.add_argument("--rules", help="explain: the rules file (default: INTAKE_RULES, "
                       "else INTAKE_CONFIG); replay: the candidate rules")
    route.add_argument("--old", help="replay: the rules to compare with (default: those in "
                       "force, INTAKE_RULES else INTAKE_CONFIG)")
    route.add_argument("--since", help="replay: messages stored at or after (RFC 3339)")
    route.add_argument("--until", help="replay: messages stored before (RFC 3339)")
    route.add_argument("--format", choices=["text", "json"], default="text")
    route.set_defaults(func=cmd_route)
