"""A ticket's SLA from its own facts (issue 17): which policy applies, its targets, and where
each clock stands. Pure: no I/O, no clock; sla.py reads and writes the ticket and its timers.

The policy is the router decision's `sla.policy` when set, else the category's `sla_policy`,
else the desk's. Targets are the policy's for the ticket's priority (`targets`, flat ones for
a priority not listed). Three clocks, in business time on the policy's calendar
(`business_hours: false`: the wall clock):

- `first_response`: from the ticket's start until the first public agent reply;
- `next_response`: from each customer message no agent reply answered yet (a cycle; the
  first customer message belongs to `first_response`) until the next public agent reply;
- `resolution`: from the ticket's start until it is resolved.

The facts kept on the ticket's `sla` (under `facts`, not shown by the API): the status
timeline (`[[status, since], …]`), when the running next-response cycle started and its
number, and the last agent reply. Pauses are derived from the timeline at each reading: the
intervals in one of the policy's `pause_on` statuses, or resolved/closed/merged, stop every
clock. So a change of priority, category, desk or policy gives new targets or another
calendar over the same facts: time spent and time paused are neither forgotten nor counted
twice (clocks.py).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from intake.calendars import ALWAYS, Calendar
from intake.config import ConfigDocument
from intake.logging import get_logger

from .clocks import Pause, read

if TYPE_CHECKING:
    from router.models import SlaPolicy

    from .timers import Timelines

TARGETS = ("first_response", "next_response", "resolution")
# Statuses whose time no clock counts whatever the policy says: the ticket is done.
STOPPED = ("resolved", "closed", "merged")

log = get_logger(component="sla")


@dataclass(slots=True)
class SlaRules:
    """The policies of the rules and who names them (desks, categories)."""

    policies: dict[str, SlaPolicy] = field(default_factory=dict)
    desk_policy: dict[str, str] = field(default_factory=dict)
    category_policy: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_document(cls, doc: ConfigDocument) -> SlaRules:
        """As the router validated them; a policy this cannot read is logged and left out
        (its tickets keep what their decision planned), never a crash at start."""
        from router.models import SlaPolicy  # the rules' own model: one definition

        found = cls()
        for raw in doc.section("sla_policies") or []:
            try:
                policy = SlaPolicy.model_validate(raw)
            except Exception as exc:
                log.warning("sla_policy_unreadable", error=str(exc)[:300])
                continue
            found.policies[policy.id] = policy
        for section, target in (("desks", found.desk_policy),
                                ("categories", found.category_policy)):
            for item in doc.section(section) or []:
                if isinstance(item, dict) and item.get("id") and item.get("sla_policy"):
                    target[str(item["id"])] = str(item["sla_policy"])
        return found

    def choose(self, decided: str | None, category: str | None,
               desk: str | None) -> tuple[str | None, str | None]:
        """(policy id, where it came from: decision, category or desk)."""
        if decided:
            return decided, "decision"
        if category and category in self.category_policy:
            return self.category_policy[category], "category"
        if desk and desk in self.desk_policy:
            return self.desk_policy[desk], "desk"
        return None, None


@dataclass(frozen=True, slots=True)
class Inputs:
    """What of the ticket the clocks read besides its facts."""

    decided: str | None  # the router decision's `sla.policy`
    category: str | None
    desk: str | None
    priority: str
    status: str


@dataclass(frozen=True, slots=True)
class Planned:
    """A timer the clocks want: kind `sla_warning` or `sla_breach`, the target, its cycle."""

    kind: str
    target: str
    cycle: int
    due_at: datetime


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def when(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) and value else None


def decided_policy(route: Any) -> str | None:
    """The decision's `sla.policy` from a ticket's stored `route`."""
    sla = route.get("sla") if isinstance(route, Mapping) else None
    policy = sla.get("policy") if isinstance(sla, Mapping) else None
    return str(policy) if policy else None


def start(sla: dict[str, Any] | None, started_at: datetime, status: str) -> dict[str, Any]:
    """A new ticket's SLA facts (the targets are filled by `evaluate`)."""
    sla = copy.deepcopy(sla) if sla else {"warnings": [], "breaches": []}
    sla.setdefault("started_at", iso(started_at))
    sla.setdefault("facts", {"statuses": [[status, iso(started_at)]],
                             "next_response_since": None, "cycle": 0,
                             "last_reply_at": None})
    return sla


def facts(sla: dict[str, Any]) -> dict[str, Any]:
    """The facts of a ticket planned before they were kept (by its decision alone): its
    status timeline starts with its start."""
    found: dict[str, Any] = sla.setdefault("facts", {})
    found.setdefault("statuses", [["open", sla.get("started_at")]])
    found.setdefault("next_response_since", None)
    found.setdefault("cycle", 0)
    found.setdefault("last_reply_at", None)
    return found


def status_entered(sla: dict[str, Any], status: str, at: datetime) -> bool:
    """Record the ticket's status from `at` when it differs from the last one recorded."""
    timeline = facts(sla)["statuses"]
    if timeline and timeline[-1][0] == status:
        return False
    timeline.append([status, iso(at)])
    return True


def customer_wrote(sla: dict[str, Any], at: datetime) -> bool:
    """A customer message at `at`: it starts a next-response cycle when the first response
    was given and no cycle runs (a message an agent reply already followed starts none)."""
    found = facts(sla)
    last_reply = when(found["last_reply_at"])
    if (not sla.get("first_response_at") or found["next_response_since"] is not None
            or (last_reply is not None and at <= last_reply)):
        return False
    found["next_response_since"] = iso(at)
    found["cycle"] = int(found["cycle"]) + 1
    return True


def agent_replied(sla: dict[str, Any], at: datetime) -> None:
    """A public agent reply: it meets the first response (once) and the running cycle."""
    found = facts(sla)
    sla.setdefault("first_response_at", None)
    if not sla["first_response_at"]:
        sla["first_response_at"] = iso(at)
    found["next_response_since"] = None
    found["last_reply_at"] = iso(at)


def pauses(sla: dict[str, Any], pause_on: Sequence[str],
           until: datetime | None = None) -> list[Pause]:
    """The intervals of the status timeline that stop the clocks, cut at `until`."""
    stopping = set(pause_on) | set(STOPPED)
    timeline = [(status, when(since)) for status, since in facts(sla)["statuses"]]
    found: list[Pause] = []
    for index, (status, since) in enumerate(timeline):
        if since is None or status not in stopping:
            continue
        end = timeline[index + 1][1] if index + 1 < len(timeline) else None
        if until is not None:
            if since >= until:
                continue
            end = until if end is None or end > until else end
        found.append(Pause(since, end))
    return found


def calendar_of(policy: SlaPolicy, desk: str | None, timelines: Timelines,
                ) -> tuple[str | None, Calendar]:
    if not policy.business_hours:
        return None, ALWAYS
    cal_id = policy.calendar or timelines.desk_calendar.get(desk or "") or "always"
    return cal_id, timelines.calendars.get(cal_id, ALWAYS)


def _due(begin: datetime, length: timedelta, now: datetime, stops: list[Pause],
         calendar: Calendar) -> datetime | None:
    try:
        return read(begin, length, now, stops, calendar).due_at
    except ValueError:  # a calendar without working time for years: no due time, no crash
        return None


def evaluate(sla: dict[str, Any], inputs: Inputs, now: datetime, timelines: Timelines,
             ) -> list[Planned] | None:
    """Fill the ticket's `sla` (policy, due times, `paused`, the warnings to come) from its
    facts at `now`; returns the timers the clocks want. None: no policy of the rules applies
    (the ticket keeps what its decision planned, untouched)."""
    rules: SlaRules = timelines.sla
    policy_id, source = rules.choose(inputs.decided, inputs.category, inputs.desk)
    policy = rules.policies.get(policy_id or "")
    if policy is None:
        return None
    found = facts(sla)
    cal_id, calendar = calendar_of(policy, inputs.desk, timelines)
    chosen = policy.targets_for(inputs.priority)
    started = when(sla.get("started_at"))
    resolved = inputs.status in STOPPED
    fired = {(w["target"], int(w.get("cycle") or 0)) for w in sla.get("warnings", [])
             if w.get("fired_at")}
    breached = {(b["target"], int(b.get("cycle") or 0)) for b in sla.get("breaches", [])}
    cycle = int(found["cycle"])
    clocks: dict[str, tuple[datetime | None, datetime | None, int]] = {
        "first_response": (started, when(sla.get("first_response_at")), 0),
        "next_response": (when(found["next_response_since"]), None, cycle),
        "resolution": (started, None, 0)}
    planned: list[Planned] = []
    warnings = [w for w in sla.get("warnings", []) if w.get("fired_at")]
    sla.update(policy=policy.id, policy_source=source, business_hours=policy.business_hours,
               calendar=cal_id, paused=inputs.status in policy.pause_on,
               next_response_cycle=cycle)
    for target in TARGETS:
        begin, met_at, target_cycle = clocks[target]
        length: timedelta | None = getattr(chosen, target)
        sla[f"{target}_due_at"] = None
        if begin is None or length is None:
            continue
        stops = pauses(sla, policy.pause_on, until=met_at)
        due = _due(begin, length, now, stops, calendar)
        sla[f"{target}_due_at"] = iso(due)
        running = met_at is None and not (target == "resolution" and resolved)
        if not running or due is None:
            continue
        if (target, target_cycle) not in breached:
            planned.append(Planned("sla_breach", target, target_cycle, due))
        warn = warn_after(policy, length)
        if warn is None or (target, target_cycle) in fired:
            continue
        warn_due = _due(begin, warn, now, stops, calendar)
        if warn_due is not None and (target, target_cycle) not in breached:
            planned.append(Planned("sla_warning", target, target_cycle, warn_due))
            warnings.append({"target": target, "cycle": target_cycle, "at": iso(warn_due),
                             "fired_at": None})
    sla["warnings"] = warnings
    sla["pauses"] = [{"start": iso(p.start), "end": iso(p.end)}
                     for p in pauses(sla, policy.pause_on)]
    return planned


def warn_after(policy: SlaPolicy, length: timedelta) -> timedelta | None:
    """When a target's warning falls, in its clock's time: `warn_before` the target (when
    shorter than it) or `warn_at` of it."""
    if policy.warn_before is not None and policy.warn_before < length:
        return length - policy.warn_before
    if policy.warn_at is not None:
        return length * policy.warn_at
    return None
