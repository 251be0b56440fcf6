"""Who gets a ticket: a skill group's strategy over its agents, with the reason for each one
passed over, and which waiting ticket goes first when room frees up.

Pure decisions, no storage: the caller reads the candidates (membership, presence, capacity
and load on the ticket's channel, when each was last assigned) in the transaction that then
writes the assignment, so a decision and its write never see different loads.

Strategies (the skill group's `strategy`):
* `round_robin`: the eligible agent assigned least recently (never assigned first);
* `least_loaded`: the lowest load ÷ capacity on the ticket's channel, ties to the least
  recently assigned;
* `claim` (抢单): nothing automatic; tickets wait until an agent claims them.

Eligible: a member of the group, `online` (`away` takes no new work), room on the ticket's
channel. A capacity of none anywhere (agent and group silent on the channel) is no limit, as
in Zendesk; a capacity of 0 takes nothing on that channel.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

Strategy = Literal["round_robin", "least_loaded", "claim"]
Passed = Literal["not_a_member", "offline", "away", "at_capacity"]

# Highest first; a waiting ticket of a higher priority goes before an older one.
PRIORITY_RANK = {"urgent": 0, "high": 1, "normal": 2, "low": 3}


@dataclass(frozen=True)
class Candidate:
    """One agent as the decision sees them, for one ticket's channel."""

    agent_id: str
    member: bool
    presence: str  # online, away, offline
    capacity: int | None  # on the ticket's channel; None: no limit
    load: int  # tickets assigned in the load statuses, on that channel
    last_assigned_at: datetime | None = None

    def passed_because(self) -> Passed | None:
        if not self.member:
            return "not_a_member"
        if self.presence == "offline":
            return "offline"
        if self.presence != "online":
            return "away"
        if self.capacity is not None and self.load >= self.capacity:
            return "at_capacity"
        return None


@dataclass(frozen=True)
class Choice:
    """The decision and its record for the ticket's history."""

    strategy: Strategy
    agent_id: str | None
    candidates: list[str]
    passed_over: dict[str, Passed] = field(default_factory=dict)

    def history(self) -> dict[str, object]:
        return {"strategy": self.strategy, "agent_id": self.agent_id,
                "candidates": self.candidates, "passed_over": self.passed_over}


def capacity_on(channel: str, agent_capacity: Mapping[str, int],
                group_capacity: Mapping[str, int]) -> int | None:
    """The agent's own capacity on the channel, else the skill group's, else no limit."""
    if channel in agent_capacity:
        return agent_capacity[channel]
    return group_capacity.get(channel)


def choose(strategy: Strategy, candidates: Sequence[Candidate]) -> Choice:
    """The agent a new or returning ticket goes to now, or none (it waits in the queue)."""
    passed: dict[str, Passed] = {}
    eligible: list[Candidate] = []
    for candidate in candidates:
        reason = candidate.passed_because()
        if reason is None:
            eligible.append(candidate)
        else:
            passed[candidate.agent_id] = reason
    names = [c.agent_id for c in candidates]
    if strategy == "claim" or not eligible:
        return Choice(strategy, None, names, passed)
    key = _least_loaded_key if strategy == "least_loaded" else _least_recent_key
    return Choice(strategy, min(eligible, key=key).agent_id, names, passed)


def _least_recent_key(candidate: Candidate) -> tuple[bool, datetime | str, str]:
    # Never assigned sorts first; then the oldest assignment; the id breaks exact ties.
    last = candidate.last_assigned_at
    return (last is not None, last if last is not None else "", candidate.agent_id)


def _least_loaded_key(candidate: Candidate) -> tuple[float, tuple[bool, datetime | str, str]]:
    ratio = 0.0 if candidate.capacity is None else candidate.load / max(candidate.capacity, 1)
    return (ratio, _least_recent_key(candidate))


@dataclass(frozen=True)
class Waiting:
    """An unassigned ticket in a skill group's queue."""

    ticket_id: str
    priority: str
    waiting_since: datetime


def first_waiting(tickets: Iterable[Waiting]) -> Waiting | None:
    """The ticket freed room goes to: the highest priority, then the longest wait; never a
    newer one first (Chatwoot hands a freed agent the newest conversation)."""
    return min(tickets, key=lambda t: (PRIORITY_RANK.get(t.priority, 2), t.waiting_since,
                                       t.ticket_id), default=None)
