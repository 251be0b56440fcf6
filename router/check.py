"""The checks between sections that the models cannot see alone: references, modes, calendars.

Each problem is a `Finding` with a lint code (`unknown-desk`, `bad-delivery`, ...); errors
refuse a file, warnings are shown by `intake route lint`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from intake.calendars import compile_calendar

from .models import (
    DEFAULT_ROUTE_ID,
    LEAD_ROLE,
    MODE_ROLES,
    Loc,
    RoutingConfig,
    Target,
    delivery_roles,
)
from .paths import resolve_path


@dataclass(frozen=True, slots=True)
class Finding:
    severity: str  # error, warning
    code: str
    loc: Loc
    message: str
    route: str | None = None

    def as_dict(self, line: int | None) -> dict[str, Any]:
        return {"severity": self.severity, "code": self.code, "route": self.route,
                "line": line, "message": self.message}


def cross_check(config: RoutingConfig) -> list[Finding]:
    """References between sections, paths, modes and roles; errors unless said otherwise."""
    found: list[Finding] = []

    def error(code: str, loc: Loc, message: str, route: str | None = None) -> None:
        found.append(Finding("error", code, loc, message, route))

    for section in ("calendars", "desks", "skill_groups", "categories", "sla_policies",
                    "escalations", "routes"):
        seen: set[str] = set()
        for i, entry in enumerate(getattr(config, section)):
            if entry.id in seen:
                error("duplicate-id", (section, i, "id"), f"duplicate id '{entry.id}'")
            seen.add(entry.id)
    desks = {d.id for d in config.desks}
    groups = {g.id: g.desk for g in config.skill_groups}
    categories = {c.id for c in config.categories}
    calendars = {c.id for c in config.calendars} | {"always"}
    policies = {p.id for p in config.sla_policies}
    escalations = {e.id for e in config.escalations}

    def known(kind: str, value: str, names: set[str] | dict[str, str]) -> str:
        listed = ", ".join(sorted(names)) or "none"
        return f"unknown {kind} '{value}' (declared: {listed})"

    closed: set[str] = set()
    for i, spec in enumerate(config.calendars):
        compiled, problems = compile_calendar(spec)
        for problem in problems:
            error("calendar-conflict", ("calendars", i), problem)
        if not any(compiled.week) and not compiled.make_up:
            closed.add(spec.id)

    def check_calendar(loc: Loc, calendar: str | None) -> None:
        if calendar is not None and calendar not in calendars:
            error("unknown-calendar", (*loc, "calendar"), known("calendar", calendar,
                                                                calendars))

    def check_desk(loc: Loc, desk: str | None, group: str | None, route: str | None) -> None:
        if desk is None:
            error("bad-delivery", (*loc, "desk"), "required with mode single", route)
            return
        if desk not in desks:
            error("unknown-desk", (*loc, "desk"), known("desk", desk, desks), route)
        if group is not None:
            if group not in groups:
                error("unknown-skill-group", (*loc, "skill_group"),
                      known("skill group", group, groups), route)
            elif desk in desks and groups[group] != desk:
                error("skill-group-wrong-desk", (*loc, "skill_group"),
                      f"skill group '{group}' belongs to desk '{groups[group]}', not "
                      f"'{desk}'", route)

    def check_policy(loc: Loc, policy: str | None) -> None:
        if policy is not None and policy not in policies:
            error("unknown-sla-policy", (*loc, "sla_policy"), known("SLA policy", policy,
                                                                     policies))

    for i, category in enumerate(config.categories):
        check_policy(("categories", i), category.sla_policy)
    for i, desk in enumerate(config.desks):
        check_calendar(("desks", i), desk.calendar)
        check_policy(("desks", i), desk.sla_policy)
        default_group = desk.default_skill_group
        if default_group is not None:
            if default_group not in groups:
                error("unknown-skill-group", ("desks", i, "default_skill_group"),
                      known("skill group", default_group, groups))
            elif groups[default_group] != desk.id:
                error("skill-group-wrong-desk", ("desks", i, "default_skill_group"),
                      f"skill group '{default_group}' belongs to desk "
                      f"'{groups[default_group]}', not '{desk.id}'")
    for i, group in enumerate(config.skill_groups):
        if group.desk not in desks:
            error("unknown-desk", ("skill_groups", i, "desk"), known("desk", group.desk, desks))
    for i, policy in enumerate(config.sla_policies):
        check_calendar(("sla_policies", i), policy.calendar)
        if policy.business_hours and policy.calendar in closed:
            error("bad-sla", ("sla_policies", i, "calendar"),
                  f"calendar '{policy.calendar}' has no working hours: business-hours "
                  "targets would never fall due")
        if policy.warn_before is not None and policy.first_response is not None \
                and policy.warn_before >= policy.first_response:
            error("bad-sla", ("sla_policies", i, "warn_before"),
                  "warn_before is not shorter than first_response")
        for priority, targets in policy.targets.items():
            first = targets.first_response
            if policy.warn_before is not None and first is not None \
                    and policy.warn_before >= first:
                error("bad-sla", ("sla_policies", i, "targets", priority, "first_response"),
                      f"not longer than warn_before ({priority})")
    for i, escalation in enumerate(config.escalations):
        check_calendar(("escalations", i), escalation.calendar)
        step_ids: set[str] = set()
        for j, step in enumerate(escalation.steps):
            if step.id in step_ids:
                error("duplicate-id", ("escalations", i, "steps", j, "id"),
                      f"duplicate step id '{step.id}'")
            step_ids.add(step.id)
            if step.target is not None:
                check_desk(("escalations", i, "steps", j, "target"), step.target.desk,
                           step.target.skill_group, None)
            for k, action in enumerate(step.on_overdue):
                assign = getattr(action, "assign", None)
                if assign is not None:
                    check_desk(("escalations", i, "steps", j, "on_overdue", k, "assign"),
                               assign.desk, assign.skill_group, None)

    def check_target(loc: Loc, target: Target, route: str) -> None:
        if target.mode == "single":
            if target.deliveries is not None:
                error("bad-delivery", (*loc, "deliveries"),
                      "deliveries need mode multi, primary_secondary or split; mode single "
                      "takes desk and skill_group (or skills)", route)
            else:
                check_desk(loc, target.desk, target.skill_group, route)
        else:
            for name in ("desk", "skill_group", "skills"):
                if getattr(target, name) is not None:
                    error("bad-delivery", (*loc, name),
                          f"with mode {target.mode}, name each desk under deliveries", route)
            _check_deliveries(loc, target, route, check_desk, error)
        if target.sticky_by is not None and target.mode != "split":
            error("bad-delivery", (*loc, "sticky_by"), "sticky_by belongs to mode split", route)
        if target.category is not None and categories and target.category not in categories:
            error("unknown-category", (*loc, "category"),
                  known("category", target.category, categories), route)
        if target.sla is not None and target.sla not in policies:
            error("unknown-sla-policy", (*loc, "sla"), known("SLA policy", target.sla,
                                                              policies), route)
        if target.escalation is not None and target.escalation not in escalations:
            error("unknown-escalation", (*loc, "escalation"),
                  known("escalation", target.escalation, escalations), route)

    for i, route in enumerate(config.routes):
        if route.id == DEFAULT_ROUTE_ID:
            error("duplicate-id", ("routes", i, "id"), f"'{DEFAULT_ROUTE_ID}' names the "
                  "default route; choose another id", route.id)
        check_target(("routes", i), route, route.id)
        for j, condition in enumerate(route.match.where):
            _, path_problem = resolve_path(condition.field)
            if path_problem:
                error("unknown-key", ("routes", i, "match", "where", j, "field"), path_problem,
                      route.id)
    check_target(("default_route",), config.default_route, DEFAULT_ROUTE_ID)
    return found


def _check_deliveries(loc: Loc, target: Target, route: str, check_desk: Any,
                      error: Any) -> None:
    deliveries = target.deliveries or []
    if len(deliveries) < 2:
        error("bad-delivery", (*loc, "deliveries"),
              f"mode {target.mode} needs at least two deliveries", route)
        return
    allowed = MODE_ROLES[target.mode][2]
    roles = delivery_roles(target.mode, deliveries)
    seen_desks: set[str] = set()
    for j, delivery in enumerate(deliveries):
        dloc = (*loc, "deliveries", j)
        check_desk(dloc, delivery.desk, delivery.skill_group, route)
        if delivery.desk in seen_desks and target.mode != "split":
            error("bad-delivery", (*dloc, "desk"), f"desk '{delivery.desk}' is named twice",
                  route)
        seen_desks.add(delivery.desk)
        if roles[j] not in allowed:
            error("bad-delivery", (*dloc, "role"), f"role {roles[j]} does not fit mode "
                  f"{target.mode} (use {', '.join(sorted(allowed))})", route)
        if roles[j] == "overflow" and delivery.after is None:
            error("bad-delivery", (*dloc, "after"), "an overflow delivery needs `after`", route)
        if roles[j] != "overflow" and delivery.after is not None:
            error("bad-delivery", (*dloc, "after"), "`after` belongs to overflow deliveries",
                  route)
        if (delivery.weight is not None) != (target.mode == "split"):
            error("bad-delivery", (*dloc, "weight"), "every split delivery has a weight, "
                  "and only split deliveries do", route)
    if target.mode == "split":
        total = sum(d.weight or 0 for d in deliveries)
        if total != 100:
            error("bad-delivery", (*loc, "deliveries"), f"split weights sum to {total}, not "
                  "100", route)
        return
    lead = LEAD_ROLE[target.mode]
    if roles.count(lead) != 1:
        error("bad-delivery", (*loc, "deliveries"), f"mode {target.mode} needs exactly one "
              f"delivery with role {lead} (got {roles.count(lead)})", route)
    afters = [d.after for d, r in zip(deliveries, roles, strict=True) if r == "overflow"]
    if any(b is not None and a is not None and b <= a for a, b in itertools.pairwise(afters)):
        error("bad-delivery", (*loc, "deliveries"), "overflow afters are cumulative from "
              "received_at: each must be later than the one before", route)
