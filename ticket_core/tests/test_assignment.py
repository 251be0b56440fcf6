"""The assignment decisions: fairness of both strategies over 1,000 tickets, capacity per
channel, presence, and which waiting ticket goes first."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta

from ticket_core.assignment import Candidate, Waiting, capacity_on, choose, first_waiting

T0 = datetime(2026, 10, 8, 9, 0, tzinfo=UTC)


def agent(agent_id: str, *, load: int = 0, capacity: int | None = 10, presence: str = "online",
          member: bool = True, last: datetime | None = None) -> Candidate:
    return Candidate(agent_id, member, presence, capacity, load, last)


def test_round_robin_shares_1000_tickets_evenly_in_turn() -> None:
    last: dict[str, datetime | None] = {name: None for name in "abcde"}
    given: list[str] = []
    for n in range(1000):
        choice = choose("round_robin", [agent(a, capacity=None, last=last[a]) for a in last])
        assert choice.agent_id is not None
        given.append(choice.agent_id)
        last[choice.agent_id] = T0 + timedelta(seconds=n)
    assert Counter(given) == {a: 200 for a in "abcde"}
    # In turn: every window of five holds each agent once.
    assert all(sorted(given[i:i + 5]) == list("abcde") for i in range(0, 1000, 5))


def test_least_loaded_keeps_load_in_proportion_to_capacity_over_1000_tickets() -> None:
    capacity = {"big": 10, "small1": 5, "small2": 5}
    load = dict.fromkeys(capacity, 0)
    last: dict[str, datetime | None] = dict.fromkeys(capacity)
    rng = random.Random(7)
    assigned = Counter[str]()
    waited = 0
    for n in range(1000):
        choice = choose("least_loaded", [agent(a, load=load[a], capacity=capacity[a],
                                               last=last[a]) for a in capacity])
        room = [load[a] / capacity[a] for a in capacity if load[a] < capacity[a]]
        if choice.agent_id is not None:  # the lowest load ÷ capacity of those with room
            assert load[choice.agent_id] / capacity[choice.agent_id] == min(room)
        if choice.agent_id is None:
            waited += 1
            assert set(choice.passed_over.values()) == {"at_capacity"}
        else:
            load[choice.agent_id] += 1
            assigned[choice.agent_id] += 1
            last[choice.agent_id] = T0 + timedelta(seconds=n)
        assert all(load[a] <= capacity[a] for a in capacity)
        for a in capacity:  # each ticket held is resolved with the same chance per step
            load[a] -= sum(rng.random() < 0.15 for _ in range(load[a]))
    assert waited < 1000 and sum(assigned.values()) == 1000 - waited
    # The agent with twice the room took about twice the tickets.
    assert 1.6 < assigned["big"] / ((assigned["small1"] + assigned["small2"]) / 2) < 2.4


def test_least_loaded_ties_go_to_the_least_recently_assigned() -> None:
    choice = choose("least_loaded", [agent("a", load=2, last=T0 + timedelta(minutes=5)),
                                     agent("b", load=2, last=T0),
                                     agent("c", load=3, last=None)])
    assert choice.agent_id == "b"


def test_only_online_members_with_room_are_eligible_and_each_other_one_says_why() -> None:
    choice = choose("round_robin", [
        agent("off", presence="offline"), agent("away", presence="away"),
        agent("full", load=5, capacity=5), agent("outsider", member=False),
        agent("zero", capacity=0), agent("ok", load=9, capacity=10)])
    assert choice.agent_id == "ok"
    assert choice.passed_over == {"off": "offline", "away": "away", "full": "at_capacity",
                                  "outsider": "not_a_member", "zero": "at_capacity"}
    assert choice.history()["candidates"] == ["off", "away", "full", "outsider", "zero", "ok"]


def test_nobody_eligible_or_a_claim_group_leaves_the_ticket_waiting() -> None:
    assert choose("least_loaded", [agent("a", presence="away")]).agent_id is None
    assert choose("round_robin", []).agent_id is None
    claim = choose("claim", [agent("a"), agent("b")])
    assert claim.agent_id is None and claim.passed_over == {}


def test_capacity_is_per_channel_agent_first_then_group_then_unlimited() -> None:
    assert capacity_on("wechat", {"wechat": 3}, {"wechat": 5, "email": 10}) == 3
    assert capacity_on("email", {"wechat": 3}, {"wechat": 5, "email": 10}) == 10
    assert capacity_on("sdk", {"wechat": 3}, {"email": 10}) is None
    # Full on wechat, free on email: the same agent is passed over for one channel only.
    wechat = choose("least_loaded", [agent("a", load=5, capacity=capacity_on(
        "wechat", {}, {"wechat": 5, "email": 10}))])
    email = choose("least_loaded", [agent("a", load=2, capacity=capacity_on(
        "email", {}, {"wechat": 5, "email": 10}))])
    assert (wechat.agent_id, email.agent_id) == (None, "a")


def test_freed_room_goes_to_the_highest_priority_then_the_longest_wait_never_the_newest(
) -> None:
    queue = [Waiting("new-normal", "normal", T0 + timedelta(minutes=9)),
             Waiting("old-normal", "normal", T0),
             Waiting("old-low", "low", T0 - timedelta(hours=1))]
    first = first_waiting(queue)
    assert first is not None and first.ticket_id == "old-normal"
    queue.append(Waiting("late-urgent", "urgent", T0 + timedelta(minutes=30)))
    first = first_waiting(queue)
    assert first is not None and first.ticket_id == "late-urgent"
    assert first_waiting([]) is None
