"""The pure parts of doctor's management-API checks: clock offsets, policies, members."""

from __future__ import annotations

from email.utils import formatdate

from intake.doctor_broker import api_of, clock_offset, member_problems, policy_problems

QUEUE = {"name": "intake.router", "type": "quorum", "arguments": {"x-delivery-limit": 11}}


def policy(name: str, definition: dict[str, object], priority: int = 0,
           pattern: str = r"^intake\.router$") -> dict[str, object]:
    return {"name": name, "pattern": pattern, "apply-to": "queues", "priority": priority,
            "definition": definition}


def test_a_clock_within_the_date_headers_second_is_no_offset() -> None:
    now = 1_700_000_000.4
    assert clock_offset(formatdate(1_700_000_000, usegmt=True), now, now + 0.1) == 0.0


def test_a_clock_ahead_or_behind_is_measured_from_the_nearest_bound() -> None:
    sent, received = 1_700_000_000.0, 1_700_000_000.5
    assert clock_offset(formatdate(sent + 30, usegmt=True), sent, received) == 29.5
    assert clock_offset(formatdate(sent - 10, usegmt=True), sent, received) == -9.0
    assert clock_offset(None, sent, received) is None


def test_the_gateways_own_length_policy_is_no_problem() -> None:
    assert policy_problems(QUEUE, [policy("length", {"max-length": 1000})], 5,
                           "intake.dead") == []


def test_a_lower_delivery_limit_and_dropping_overflow_are_named_with_their_policy() -> None:
    found = policy_problems(QUEUE, [policy("tight", {"delivery-limit": 3,
                                                     "overflow": "drop-head"})],
                            5, "intake.dead")
    assert any(text.startswith("tight sets delivery-limit 3, under the 11") for text in found)
    assert any(text.startswith("tight sets overflow drop-head") for text in found)
    assert policy_problems(QUEUE, [policy("loose", {"delivery-limit": 50})], 5,
                           "intake.dead") == []


def test_an_operator_policy_lowers_the_limit_on_top_of_the_policy() -> None:
    found = policy_problems(QUEUE, [policy("length", {"max-length": 10})], 5, "intake.dead",
                            [policy("ops", {"delivery-limit": 2})])
    assert found and found[0].startswith("length and operator policy ops sets delivery-limit 2")


def test_a_hidden_policy_and_a_tie_are_conflicts() -> None:
    found = policy_problems(QUEUE, [policy("length", {"max-length": 10}),
                                    policy("a", {"message-ttl": 1}, 3),
                                    policy("b", {"expires": 1}, 3)], 5, "intake.dead")
    text = "\n".join(found)
    assert "policies a, b match it at the same priority" in text
    assert "policy length is hidden by a (priority 3): its max-length do not apply" in text
    assert "a sets message-ttl 1" in text and "b sets expires 1" in text


def test_a_policy_for_other_names_or_other_queue_types_is_ignored() -> None:
    assert policy_problems(QUEUE, [policy("x", {"expires": 1}, pattern="^other$")], 5,
                           "intake.dead") == []
    streams_only = {**policy("s", {"expires": 1}), "apply-to": "streams"}
    assert policy_problems(QUEUE, [streams_only], 5, "intake.dead") == []


def test_members_offline_missing_or_leaderless() -> None:
    nodes = ["a", "b", "c"]
    assert member_problems({**QUEUE, "members": nodes, "online": nodes, "leader": "a"},
                           nodes) == []
    offline = member_problems({**QUEUE, "members": nodes, "online": ["a", "b"],
                               "leader": "a"}, ["a", "b"])
    assert offline[0][0] == "member(s) offline: c (2 of 3 online)"
    lone = member_problems({**QUEUE, "members": ["a"], "online": ["a"], "leader": "a"}, nodes)
    assert lone[0][0].startswith("1 member(s) on a cluster of 3 running nodes")
    assert member_problems({**QUEUE, "members": nodes, "online": ["a"], "leader": ""},
                           nodes)[0][0].startswith("no leader")
    assert member_problems({"name": "intake.dead", "type": "stream"}, nodes) == []


def test_the_management_api_is_the_amqp_nodes_host_with_its_credentials() -> None:
    api = api_of("amqp://ops:pw@rabbit-1:5672/prod")
    assert api.base == "http://rabbit-1:15672" and api.vhost == "prod"
    assert api.authorization is not None and "pw" not in api.base
    given = api_of("amqps://ops:pw@rabbit-1/", "https://mgmt.example:443")
    assert given.base == "https://mgmt.example:443" and given.where == "mgmt.example:443"
