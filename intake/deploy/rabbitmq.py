"""`deploy/rabbitmq/definitions.json`: the topology the code declares, one user per service.

Rendered from `intake.bus.topology` (names and arguments), never typed twice. Users carry no
password hash (`""`: no password login until ops set one, `rabbitmqctl change_password`, or
the Messaging Topology Operator's `User` takes it from a Secret).

Permissions are what each service does on the bus. Every service declares the core topology
at each connect (exchanges, `intake.dead`, the core queues and their bindings): that needs
`configure` on those names, `write` on the bound queues and `read` on their exchanges, and
(for a queue with a dead-letter exchange) `read` on the queue itself, on top of what it
publishes (`write`) and consumes (`read`). So today every service may read the core queues;
what stays least privilege is `write`: a web form cannot publish to `intake.routed`, the router
not to `intake.outbound`. A consumer retries a message by republishing it to its own queue
through the default exchange (`amq.default`).
"""

from __future__ import annotations

import re
from typing import Any

from ..bus.topology import CORE_QUEUES, DEAD_ARGUMENTS, EXCHANGES, Names, queue_arguments
from ..settings import IntakeSettings
from .catalog import ServiceSpec

VHOST = "/"
OPS_USER = "intake-ops"  # `intake dlq`, `intake outbox drain`, `intake doctor`
# A bound on each work queue: past it the broker refuses publishes (`reject-publish`), which
# the edges' outboxes absorb, instead of the broker running out of memory or disk.
MAX_LENGTH = 1_000_000


def _alternatives(names: list[str]) -> str:
    return "^(" + "|".join(re.escape(name) for name in sorted(set(names))) + ")$" if names else ""


def _publishes(spec: ServiceSpec) -> list[str]:
    if spec.name == "ticket-core":
        return ["outbound", "events"]
    if spec.name == "router":
        return ["routed"]
    return ["inbound", *(["delivery"] if spec.sender else [])]


def permissions(spec: ServiceSpec, names: Names) -> dict[str, str]:
    core_queues = ["dead", *CORE_QUEUES]
    configure = [names(x) for x in [*EXCHANGES, *core_queues]]
    write = [names(x) for x in [*CORE_QUEUES, "dead", *_publishes(spec)]]
    # Declaring a queue with a dead-letter exchange needs `read` on the queue (and `write` on
    # that exchange): every service declares the core queues, so each may read them.
    read = [names(x) for x in ({exchange for exchange, _ in CORE_QUEUES.values()} | {"dead"}
                               | set(core_queues))]
    if spec.queues:
        write.append("amq.default")
        read += [names(queue) for queue in spec.queues]
        configure += [names(queue) for queue in spec.queues]
        write += [names(queue) for queue in spec.queues]
    if spec.sender:
        read.append(names("outbound"))  # its queue is bound to it
    own = ""
    if spec.connector:  # the names a connector declares for itself
        own = "|^" + re.escape(names(spec.name)) + r"\..*$"
    return {"configure": _alternatives(configure) + own, "write": _alternatives(write) + own,
            "read": _alternatives(read) + own}


def definitions(specs: list[ServiceSpec], names: Names | None = None,
                delivery_limit: int | None = None) -> dict[str, Any]:
    """The definitions file, with the default `INTAKE_DELIVERY_LIMIT`; `names` with a prefix
    (and another limit) gives a test run's own copy."""
    names = names or Names("")
    default_limit = IntakeSettings.model_fields["delivery_limit"].default
    arguments = queue_arguments(names, delivery_limit or default_limit)
    queues = [*CORE_QUEUES]
    outbound = [queue for spec in specs for queue in spec.queues if queue.startswith("outbound.")]
    users = [{"name": spec.name, "password_hash": "",
              "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": []}
             for spec in specs]
    users.append({"name": OPS_USER, "password_hash": "",
                  "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": ["monitoring"]})
    everything = "^" + re.escape(names("")) + ".*$|^amq\\.default$"
    return {
        "vhosts": [{"name": VHOST}],
        "users": users,
        "permissions": [{"user": spec.name, "vhost": VHOST, **permissions(spec, names)}
                        for spec in specs]
        + [{"user": OPS_USER, "vhost": VHOST, "configure": everything, "write": everything,
            "read": everything}],
        # `queues`, not `quorum_queues` (3.12+): RabbitMQ 3.10 refuses the import otherwise;
        # the pattern names only the work queues, all quorum queues.
        "policies": [{
            "vhost": VHOST, "name": "intake-work-queue-length", "apply-to": "queues",
            "pattern": _alternatives([names(q) for q in [*queues, *outbound]]),
            "definition": {"max-length": MAX_LENGTH}, "priority": 0}],
        "exchanges": [{"name": names(exchange), "vhost": VHOST, "type": "topic",
                       "durable": True, "auto_delete": False, "internal": False,
                       "arguments": {}} for exchange in EXCHANGES],
        "queues": [{"name": names("dead"), "vhost": VHOST, "durable": True,
                    "auto_delete": False, "arguments": dict(DEAD_ARGUMENTS)}]
        + [{"name": names(queue), "vhost": VHOST, "durable": True, "auto_delete": False,
            "arguments": arguments} for queue in [*queues, *outbound]],
        "bindings": [{"source": names("dead"), "vhost": VHOST, "destination": names("dead"),
                      "destination_type": "queue", "routing_key": "#", "arguments": {}}]
        + [{"source": names(exchange), "vhost": VHOST, "destination": names(queue),
            "destination_type": "queue", "routing_key": key, "arguments": {}}
           for queue, (exchange, key) in CORE_QUEUES.items()]
        + [{"source": names("outbound"), "vhost": VHOST, "destination": names(queue),
            "destination_type": "queue", "routing_key": queue.removeprefix("outbound.") + ".#",
            "arguments": {}} for queue in outbound],
    }


def _resource_name(name: str) -> str:
    """A broker name as a Kubernetes object name (DNS subdomain: no `_`)."""
    return re.sub(r"[^a-z0-9.-]", "-", name.lower())


def user_resource(user: str) -> str:
    """The `User` resource of a definitions user (a service's name, or intake-ops)."""
    return user if user.startswith("intake-") else f"intake-{user}"


def credentials_secret(user: str) -> str:
    """The Secret the Messaging Topology Operator writes that user's generated username and
    password into (`<User resource>-user-credentials`); the service's pods read it."""
    return f"{user_resource(user)}-user-credentials"


def topology_resources(specs: list[ServiceSpec], cluster: str) -> list[dict[str, Any]]:
    """The Messaging Topology Operator's resources for the definitions file, one for one: its
    exchanges, queues, bindings and policies; its users (credentials generated by the operator
    into a Secret, never written here) and their permissions."""
    ours = definitions(specs)
    reference = {"name": cluster}

    def resource(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        return {"apiVersion": "rabbitmq.com/v1beta1", "kind": kind,
                "metadata": {"name": _resource_name(name)},
                "spec": {**spec, "vhost": VHOST, "rabbitmqClusterReference": reference}}

    documents = [resource("Exchange", exchange["name"], {
        "name": exchange["name"], "type": exchange["type"], "durable": exchange["durable"],
        "autoDelete": exchange["auto_delete"]}) for exchange in ours["exchanges"]]
    for queue in ours["queues"]:
        arguments = dict(queue["arguments"])
        kind = arguments.pop("x-queue-type")  # the resource's `type`
        documents.append(resource("Queue", queue["name"], {
            "name": queue["name"], "type": kind, "durable": queue["durable"],
            "autoDelete": queue["auto_delete"], **({"arguments": arguments} if arguments
                                                   else {}),
            # Deleting the resource (`kubectl delete -k`) must not delete waiting messages.
            "deletionPolicy": "retain"}))
    documents += [resource("Binding", f"{binding['source']}.to.{binding['destination']}", {
        "source": binding["source"], "destination": binding["destination"],
        "destinationType": binding["destination_type"], "routingKey": binding["routing_key"]})
        for binding in ours["bindings"]]
    documents += [resource("Policy", policy["name"], {
        "name": policy["name"], "pattern": policy["pattern"], "applyTo": policy["apply-to"],
        "priority": policy["priority"], "definition": policy["definition"]})
        for policy in ours["policies"]]
    tags = {user["name"]: user["tags"] for user in ours["users"]}
    for permission in ours["permissions"]:
        name = user_resource(permission["user"])
        user = resource("User", name, {"tags": tags[permission["user"]]})
        del user["spec"]["vhost"]  # a user belongs to the cluster, not to a vhost
        documents.append(user)
        documents.append(resource("Permission", name, {
            "userReference": {"name": name},
            "permissions": {key: permission[key] for key in ("configure", "write", "read")}}))
    return documents
