"""`intake doctor` through RabbitMQ's management API: quorum queue members, policies, clocks.

AMQP says whether a queue exists, not where its quorum members live, which policy applies to
it, or what time a node thinks it is; the management API (port 15672 on every node, enabled
in the compose image and by the Cluster Operator) does. Each node's URL is derived from its
`INTAKE_AMQP_URL` entry (same host and credentials, port 15672) unless `--management-url`
gives them. A node whose API cannot be reached, or refuses the credentials (a service's user
has no `monitoring` tag; `intake-ops` has), is a note, not a problem: those checks are then
not made, and the note says how to make them.

RabbitMQ 3.10's rules for a quorum queue whose argument and policy both set a key
(`rabbit_quorum_queue:ra_machine_config/1`): `delivery-limit`, `max-length`, `message-ttl` take
the lower; `overflow` and `expires` take the policy's. Only one policy applies to a queue (the
highest priority; operator policies merge on top): a second matching policy is ignored whole.
"""

from __future__ import annotations

import email.utils
import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import aiohttp

from .bus.topology import Names, broker_delivery_limit
from .doctor import Finding, bad, error_text, node_of, ok
from .settings import IntakeSettings

MANAGEMENT_PORT = 15672
MAX_CLOCK_SKEW_S = 2.0
# Policy keys that take a quorum queue away from what the gateway relies on, and why.
HARMFUL_KEYS = {
    "expires": "the broker deletes the queue, messages and all, once it has no consumer for "
               "that long",
    "message-ttl": "messages expire into intake.dead before a consumer gets them",
}


def note(check: str, where: str, text: str) -> Finding:
    return Finding(check, where, f"not checked: {text}", noted=True)


@dataclass(frozen=True)
class Api:
    """One node's management API: its base URL (without credentials) and how to log in."""

    base: str
    authorization: str | None  # the Authorization header (Basic)
    vhost: str

    @property
    def where(self) -> str:
        parts = urlsplit(self.base)
        return f"{parts.hostname}:{parts.port}"


def api_of(amqp_url: str, management_url: str | None = None) -> Api:
    """The management API of the node `amqp_url` names (or `management_url` as given)."""
    amqp = urlsplit(amqp_url)
    vhost = unquote(amqp.path[1:]) if len(amqp.path) > 1 else "/"
    parts = urlsplit(management_url) if management_url else None
    if parts is None:
        scheme = "https" if amqp.scheme == "amqps" else "http"
        host = amqp.hostname or "127.0.0.1"
        base = f"{scheme}://{host}:{MANAGEMENT_PORT}"
        user, password = amqp.username, amqp.password
    else:
        base = f"{parts.scheme}://{parts.hostname}:{parts.port or MANAGEMENT_PORT}"
        user = parts.username or amqp.username
        password = parts.password or amqp.password
    header = aiohttp.encode_basic_auth(unquote(user), unquote(password or "")) if user else None
    return Api(base, header, vhost)


class Refused(Exception):
    """The API answered 401/403: these credentials may not read it."""


async def fetch(http: aiohttp.ClientSession, api: Api, path: str
                ) -> tuple[Any, float | None]:
    """GET `path` as JSON, with the node's clock offset from this host's (from `Date`)."""
    sent = time.time()
    headers = {"Authorization": api.authorization} if api.authorization else {}
    async with http.get(api.base + path, headers=headers) as response:
        received = time.time()
        if response.status in (401, 403):
            raise Refused(f"HTTP {response.status}")
        response.raise_for_status()
        body = await response.json()
        return body, clock_offset(response.headers.get("Date"), sent, received)


def clock_offset(date: str | None, sent: float, received: float) -> float | None:
    """How far the node's clock is ahead (positive) or behind this host's, at least.

    `Date` has whole seconds: the node's time was within [date, date + 1) while the request
    was between `sent` and `received`; 0 when the two intervals overlap.
    """
    if not date:
        return None
    node = email.utils.parsedate_to_datetime(date).timestamp()
    if node > received:
        return node - received
    if node + 1 < sent:
        return (node + 1) - sent
    return 0.0


def policy_applies(policy: dict[str, Any], queue: str, kind: str) -> bool:
    apply_to = policy.get("apply-to", "all")
    fits = apply_to in ("all", "queues") or (apply_to == "quorum_queues" and kind == "quorum") \
        or (apply_to == "streams" and kind == "stream") \
        or (apply_to == "classic_queues" and kind == "classic")
    try:
        return fits and re.search(policy["pattern"], queue) is not None
    except re.error:
        return False


def effective_definition(queue: dict[str, Any], chosen: dict[str, Any] | None,
                         operator: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    """(what applies, its keys): the policy `chosen` for the queue, with the highest matching
    operator policy on top, the lower number winning.

    Computed here from the policies: the queue's own `policy` and
    `effective_policy_definition` in the API are empty for quorum queues on RabbitMQ 3.10,
    and up to a statistics interval (5 s) old elsewhere.
    """
    names = [chosen["name"]] if chosen else []
    definition = dict(chosen.get("definition", {})) if chosen else {}
    ops = sorted((p for p in operator if policy_applies(p, queue["name"],
                                                         queue.get("type", "classic"))),
                 key=lambda p: -int(p.get("priority", 0)))
    if ops:
        names.append(f"operator policy {ops[0]['name']}")
        for key, value in ops[0].get("definition", {}).items():
            mine = definition.get(key)
            both_numbers = isinstance(mine, int) and isinstance(value, int)
            definition[key] = min(mine, value) if both_numbers else value
    return " and ".join(names) or "a policy", definition


def policy_problems(queue: dict[str, Any], policies: list[dict[str, Any]],
                    delivery_limit: int, dead_exchange: str,
                    operator: list[dict[str, Any]] | None = None) -> list[str]:
    """What the policies on `queue` (the API's view of it) change against the gateway."""
    name, kind = queue["name"], queue.get("type", "classic")
    found: list[str] = []
    matching = sorted((p for p in policies if policy_applies(p, name, kind)),
                      key=lambda p: -int(p.get("priority", 0)))
    if len(matching) > 1:
        top = matching[0]
        tied = [p["name"] for p in matching if p.get("priority", 0) == top.get("priority", 0)]
        if len(tied) > 1:
            found.append(f"policies {', '.join(sorted(tied))} match it at the same priority "
                         f"(which one applies is undefined): merge them into one policy")
        for hidden in matching[1:]:
            lost = sorted(set(hidden.get("definition", {})) - set(top.get("definition", {})))
            if lost and hidden["name"] not in tied:
                found.append(f"policy {hidden['name']} is hidden by {top['name']} (priority "
                             f"{top.get('priority', 0)}): its {', '.join(lost)} do not apply; "
                             "only one policy applies to a queue, so merge their keys")
    if kind != "quorum":
        return found
    # Policies tied at the top: any of them may be the one that applies, so each is checked.
    top_priority = matching[0].get("priority", 0) if matching else 0
    candidates: list[dict[str, Any] | None] = [
        p for p in matching if p.get("priority", 0) == top_priority] or [None]
    for chosen in candidates:
        applied, effective = effective_definition(queue, chosen, operator or [])
        found.extend(text for text in _conflicts(queue, applied, effective, delivery_limit,
                                                 dead_exchange) if text not in found)
    return found


def _conflicts(queue: dict[str, Any], applied: str, effective: dict[str, Any],
               delivery_limit: int, dead_exchange: str) -> list[str]:
    """What the keys `applied` gives a quorum queue change against the gateway."""
    found: list[str] = []
    arguments = queue.get("arguments") or {}
    wanted = int(arguments.get("x-delivery-limit") or broker_delivery_limit(delivery_limit))
    limit = effective.get("delivery-limit")
    if limit is not None and int(limit) < wanted:
        # The lower of argument and policy applies: the safety net shrinks under what the
        # gateway declared, and a message is dead-lettered after that many unsettled
        # deliveries (a crash loop, closed channels), before its retries are used.
        found.append(f"{applied} sets delivery-limit {limit}, under the {wanted} the "
                     f"gateway declares (the lower applies): a message is dead-lettered after "
                     f"{limit} unsettled deliveries, before its {delivery_limit} attempts are "
                     f"used; remove the key or raise it to {wanted}")
    if effective.get("overflow") not in (None, "reject-publish"):
        found.append(f"{applied} sets overflow {effective['overflow']}: a full queue then "
                     "drops messages instead of refusing publishes (which the outboxes "
                     "absorb); use reject-publish or remove the key")
    dlx = effective.get("dead-letter-exchange")
    if dlx is not None and dlx != dead_exchange:
        found.append(f"{applied} sets dead-letter-exchange {dlx}, not {dead_exchange}: "
                     "dead letters would not reach `intake dlq`; remove the key")
    strategy = effective.get("dead-letter-strategy")
    if strategy is not None and strategy != "at-least-once":
        found.append(f"{applied} sets dead-letter-strategy {strategy}: a dead letter may be "
                     "lost on its way; remove the key")
    for key, why in HARMFUL_KEYS.items():
        if key in effective:
            found.append(f"{applied} sets {key} {effective[key]}: {why}; remove the key")
    return found


def member_problems(queue: dict[str, Any], running: list[str]) -> list[tuple[str, str]]:
    """(what is wrong, the fix) for a quorum queue's members, given the running nodes.

    Quorum queues only: RabbitMQ 3.10's API gives a stream (`intake.dead`) no members and
    no leader, so nothing can be said of its replicas there.
    """
    if queue.get("type") != "quorum":
        return []
    members = list(queue.get("members") or [])
    online = set(queue.get("online") or [])
    found: list[tuple[str, str]] = []
    if not queue.get("leader") or queue.get("leader") == "":
        found.append(("no leader: fewer than a majority of its members are online",
                      "start the nodes it lives on"))
    offline = [member for member in members if member not in online]
    if offline:
        found.append((f"member(s) offline: {', '.join(offline)} "
                      f"({len(online)} of {len(members)} online)",
                      "start that node (`rabbitmq-diagnostics check_running`); a node gone "
                      "for good: `rabbitmq-queues delete_member`, then `grow` on its "
                      "replacement"))
    if len(running) > len(members) and len(members) < 3:
        found.append((f"{len(members)} member(s) on a cluster of {len(running)} running "
                      "nodes: it does not survive the loss of a node",
                      "add members: `rabbitmq-queues grow <node> all` for each node it lacks "
                      "(a queue declared before the cluster formed keeps one member)"))
    return found


async def check_management(settings: IntakeSettings, expected: list[str],
                           management_urls: list[str] | None = None) -> list[Finding]:
    """The broker's quorum queues, policies and clocks, from each node's management API."""
    urls = settings.amqp_urls
    given = management_urls or []
    apis = [api_of(url, given[i] if i < len(given) else None) for i, url in enumerate(urls)]
    findings: list[Finding] = []
    offsets: dict[str, float] = {}
    answering: Api | None = None
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        for amqp_url, api in zip(urls, apis, strict=True):
            where = f"{node_of(amqp_url)} (management {api.where})"
            try:
                overview, offset = await fetch(http, api, "/api/overview")
            except Refused as exc:
                findings.append(note("cluster", where, f"the management API refused these "
                                     f"credentials ({exc}); run doctor as a user with the "
                                     "monitoring tag (intake-ops), or pass --management-url"))
                continue
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                findings.append(note("cluster", where, f"no management API ({error_text(exc)}"
                                     "); enable rabbitmq_management, or pass "
                                     "--management-url"))
                continue
            node = str(overview.get("node", api.where))
            if offset is not None:
                offsets[node] = offset
                findings.append(_clock(node, where, offset))
            answering = answering or api
        if answering is not None:
            findings.extend(await _queues(http, answering, settings, expected))
    if len(offsets) > 1:
        spread = max(offsets.values()) - min(offsets.values())
        if spread > MAX_CLOCK_SKEW_S:
            findings.append(bad("clock", "cluster", f"the nodes' clocks differ by {spread:.1f} "
                                f"s ({', '.join(f'{n} {o:+.1f} s' for n, o in offsets.items())}"
                                ")", "run NTP (chrony, systemd-timesyncd) on every node"))
        else:
            findings.append(ok("clock", "cluster", f"the {len(offsets)} nodes' clocks agree "
                               f"within {MAX_CLOCK_SKEW_S:g} s"))
    return findings


def _clock(node: str, where: str, offset: float) -> Finding:
    if abs(offset) > MAX_CLOCK_SKEW_S:
        side = "ahead of" if offset > 0 else "behind"
        return bad("clock", f"{where} {node}", f"its clock is {abs(offset):.1f} s {side} "
                   "this host's", "run NTP (chrony, systemd-timesyncd) on the node and here")
    return ok("clock", f"{where} {node}", f"within {MAX_CLOCK_SKEW_S:g} s of this host")


async def _queues(http: aiohttp.ClientSession, api: Api, settings: IntakeSettings,
                  expected: list[str]) -> list[Finding]:
    names = Names(settings.bus_prefix)
    vhost = quote(api.vhost, safe="")
    nodes, _ = await fetch(http, api, "/api/nodes")
    running = sorted(str(n["name"]) for n in nodes if n.get("running"))
    policies, _ = await fetch(http, api, f"/api/policies/{vhost}")
    operator, _ = await fetch(http, api, f"/api/operator-policies/{vhost}")
    findings: list[Finding] = [ok("cluster", api.where, f"{len(running)} running node(s)")]
    for logical in ["dead", *expected]:
        name = names(logical)
        where = f"{api.where} queue {name}"
        try:
            queue, _ = await fetch(http, api, f"/api/queues/{vhost}/{quote(name, safe='')}")
        except aiohttp.ClientResponseError as exc:
            if exc.status == 404:
                continue  # the AMQP check already says it is missing
            raise
        kind = queue.get("type", "classic")
        want = "stream" if logical == "dead" else "quorum"
        if kind != want:
            findings.append(bad("queue", where, f"a {kind} queue where the code declares a "
                                f"{want} queue", "drain it, delete it, and let a service (or "
                                "deploy/rabbitmq/definitions.json) declare it again"))
            continue
        problems = member_problems(queue, running)
        findings.extend(bad("quorum", where, text, fix) for text, fix in problems)
        if not problems and kind == "quorum":
            findings.append(ok("quorum", where, f"{len(queue.get('members') or [])} member(s) "
                               f"online, leader {queue.get('leader')}"))
        findings.extend(bad("policy", where, text, "rabbitmqctl list_policies; "
                            "deploy/rabbitmq/definitions.json has the gateway's")
                        for text in policy_problems(queue, policies, settings.delivery_limit,
                                                    names("dead"), operator))
    return findings
