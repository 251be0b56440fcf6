"""Loading: validate the routing sections of a config document, compile, lint and test them.

`load_rules` refuses (ConfigInvalid, each problem as `file:line: field: reason`) a file with a
structural error, a wrong reference, a `when` that cannot compile, a lint error (shadowed or
unreachable route, ...) or a failing inline test. `analyse` is the same work without refusing:
`intake route check|lint|test` report from it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime

from intake.calendars import ALWAYS, Calendar, compile_calendar
from intake.config import ROUTING_SECTIONS, ConfigDocument, validate
from intake.errors import ConfigInvalid

from .check import Finding, cross_check
from .compile import CompiledRoute, compile_route
from .decide import RuleSet
from .evaluate import ExprError
from .expr import ParseError
from .index import plan_channel
from .models import CHANNELS, DEFAULT_ROUTE_ID, Loc, RoutingConfig
from .plan import Planner


def where(doc: ConfigDocument, loc: Loc) -> str:
    source = doc.sources.get(str(loc[0])) if loc else None
    return (source or doc).where(loc)


def line_of(doc: ConfigDocument, loc: Loc) -> int | None:
    source = doc.sources.get(str(loc[0])) if loc else None
    return (source or doc).line_of(loc)


@dataclass
class Analysis:
    """Everything known about a rules file: findings (errors and warnings), the compiled
    RuleSet when it compiled, and the inline tests' results."""

    doc: ConfigDocument
    findings: list[Finding] = field(default_factory=list)
    rules: RuleSet | None = None
    test_results: list[tuple[str, str, list[str]]] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    def problems(self, findings: list[Finding] | None = None) -> list[str]:
        return [f"{where(self.doc, f.loc)}: {'.'.join(map(str, f.loc))}: {f.message}"
                for f in (self.errors if findings is None else findings)]

    def failed_tests(self) -> list[str]:
        return [f"test {name} of route {route}: {'; '.join(diffs)}"
                for route, name, diffs in self.test_results if diffs]


def compile_rules(doc: ConfigDocument, config: RoutingConfig,
                  source_bytes: bytes | str) -> tuple[RuleSet | None, list[Finding]]:
    """Compile every route; a `when` that cannot compile is a finding with its column."""
    findings: list[Finding] = []
    calendars: dict[str, Calendar] = {"always": ALWAYS}
    for spec in config.calendars:
        calendars[spec.id], _ = compile_calendar(spec)
    routes: list[CompiledRoute] = []
    for i, route in enumerate(config.routes):
        try:
            routes.append(compile_route(route, route.id, i, config, calendars))
        except ParseError as exc:
            code = ("unknown-function" if "function" in exc.reason or "argument" in exc.reason
                    else "bad-expression")
            findings.append(Finding("error", code, ("routes", i, "when"), str(exc), route.id))
        except ExprError as exc:
            where_from = "sticky_by" if exc.sticky else "when"
            column = f" at column {exc.position + 1}" if where_from == "when" else ""
            findings.append(Finding("error", exc.code, ("routes", i, where_from),
                                    f"{exc}{column}", route.id))
    try:
        default = compile_route(config.default_route, DEFAULT_ROUTE_ID, len(routes), config,
                                calendars)
    except ExprError as exc:  # an unknown sticky_by key
        findings.append(Finding("error", exc.code, ("default_route", "sticky_by"), str(exc),
                                DEFAULT_ROUTE_ID))
    if findings:
        return None, findings
    raw = source_bytes.encode("utf-8") if isinstance(source_bytes, str) else source_bytes
    plans = {channel: plan_channel(routes, channel) for channel in CHANNELS}
    data_keys = [key for key in ROUTING_SECTIONS if key in doc.data]
    sources = sorted({str(s.path) for s in doc.sources.values()} | (
        {str(doc.path)} if len(doc.sources) < len(data_keys) else set()))
    return RuleSet(revision=hashlib.sha256(raw).hexdigest(), config=config,
                   routes=tuple(routes), default=default, plans=plans,
                   loaded_at=datetime.now(UTC), source=", ".join(sources),
                   planner=Planner(config, calendars), calendars=calendars), findings


def analyse(doc: ConfigDocument, source_bytes: bytes | str, *, lint: bool = True,
            run_tests: bool = True) -> Analysis:
    """Validate (raises ConfigInvalid on a structural error), cross-check, compile, lint,
    and run the inline tests."""
    from .inline_tests import run_inline_tests
    from .lint import lint_rules

    data = {key: doc.data[key] for key in ROUTING_SECTIONS if key in doc.data}
    config = validate(doc, RoutingConfig, data)
    analysis = Analysis(doc=doc, findings=cross_check(config))
    if analysis.errors:
        return analysis
    rules, findings = compile_rules(doc, config, source_bytes)
    analysis.findings.extend(findings)
    analysis.rules = rules
    if rules is None:
        return analysis
    if lint:
        analysis.findings.extend(lint_rules(rules))
    if run_tests and not analysis.errors:
        analysis.test_results = run_inline_tests(rules)
    return analysis


def load_rules(doc: ConfigDocument, source_bytes: bytes | str, *, lint: bool = True,
               run_tests: bool = True) -> RuleSet:
    """Validate, compile, lint and test the routing sections of `doc`; raise ConfigInvalid
    naming lines for any error or failing test.

    `source_bytes` are the bytes of the file(s) the sections came from: the revision is their
    sha256, so ops can compare it with `sha256sum rules.yaml`.
    """
    analysis = analyse(doc, source_bytes, lint=lint, run_tests=run_tests)
    problems = analysis.problems() + analysis.failed_tests()
    if problems or analysis.rules is None:
        raise ConfigInvalid(problems or ["the rules did not compile"])
    warnings = tuple(analysis.problems([f for f in analysis.findings
                                        if f.severity == "warning"]))
    return RuleSet(**{**{name: getattr(analysis.rules, name)
                         for name in analysis.rules.__dataclass_fields__},
                      "warnings": warnings})
