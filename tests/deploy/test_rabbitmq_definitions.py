"""deploy/rabbitmq/definitions.json against the real broker: its queues and exchanges are
what the code declares (a redeclaration with other arguments would be refused), and each
service's user can do what the service does at connect and publish, and not more."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator

import aio_pika
import pytest

from intake.bus import Bus
from intake.bus.topology import Names
from intake.deploy.catalog import services
from intake.deploy.rabbitmq import definitions, user_resource
from intake.deploy.render import DEPLOY
from intake.settings import IntakeSettings
from tests.conftest import delete_topology

from .support import OVERLAYS, rendered_overlay, tool


def test_the_file_is_the_rendered_topology() -> None:
    on_disk = json.loads((DEPLOY / "rabbitmq" / "definitions.json").read_text())
    assert on_disk == definitions(services())
    queues = {queue["name"] for queue in on_disk["queues"]}
    assert {"intake.router", "intake.ticket_core", "intake.ticket_core.delivery",
            "intake.dead"} <= queues
    assert {user["name"] for user in on_disk["users"]} >= {s.name for s in services()}
    assert all(user["password_hash"] == "" for user in on_disk["users"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_topology_operators_resources_are_the_definitions(overlay: str) -> None:
    """Exchange, Queue, Binding and Policy resources of the rendered overlay, read back into
    the definitions' form, are the definitions file's (on Kubernetes, the same topology)."""
    ours = definitions(services())
    docs = [doc for doc in rendered_overlay(overlay) if doc["apiVersion"] == "rabbitmq.com/v1beta1"
            and doc["kind"] != "RabbitmqCluster"]
    assert all(doc["spec"]["rabbitmqClusterReference"] == {"name": "intake-rabbitmq"}
               and doc["spec"].get("vhost", "/") == "/" for doc in docs)
    specs = {kind: [doc["spec"] for doc in docs if doc["kind"] == kind]
             for kind in ("Exchange", "Queue", "Binding", "Policy")}

    def same(rendered: list[dict[str, object]], listed: list[dict[str, object]]) -> bool:
        """Equal as sets (kustomize orders resources its own way)."""
        def text(item: object) -> str:
            return json.dumps(item, sort_keys=True)

        return sorted(map(text, rendered)) == sorted(map(text, listed))

    assert same([{"name": s["name"], "vhost": s["vhost"], "type": s["type"],
                  "durable": s["durable"], "auto_delete": s["autoDelete"], "internal": False,
                  "arguments": {}} for s in specs["Exchange"]], ours["exchanges"])
    assert same([{"name": s["name"], "vhost": s["vhost"], "durable": s["durable"],
                  "auto_delete": s["autoDelete"],
                  "arguments": {"x-queue-type": s["type"], **s.get("arguments", {})}}
                 for s in specs["Queue"]], ours["queues"])
    assert all(s["deletionPolicy"] == "retain" for s in specs["Queue"])
    assert same([{"source": s["source"], "vhost": s["vhost"], "destination": s["destination"],
                  "destination_type": s["destinationType"], "routing_key": s["routingKey"],
                  "arguments": {}} for s in specs["Binding"]], ours["bindings"])
    assert same([{"vhost": s["vhost"], "name": s["name"], "apply-to": s["applyTo"],
                  "pattern": s["pattern"], "definition": s["definition"],
                  "priority": s["priority"]} for s in specs["Policy"]], ours["policies"])
    # One User per definitions user (credentials generated into a Secret the service's pods
    # read), and its permissions as the definitions give them.
    users = {doc["metadata"]["name"]: doc["spec"] for doc in docs if doc["kind"] == "User"}
    grants = {doc["spec"]["userReference"]["name"]: doc["spec"]["permissions"]
              for doc in docs if doc["kind"] == "Permission"}
    for permission in ours["permissions"]:
        name = user_resource(permission["user"])
        assert "importCredentialsSecret" not in users[name]
        assert grants[name] == {key: permission[key] for key in ("configure", "write", "read")}
    assert len(users) == len(grants) == len(ours["users"])


async def test_its_queues_and_exchanges_are_what_the_code_declares(
        bus: Bus, settings: IntakeSettings) -> None:
    ours = definitions(services(), Names(settings.bus_prefix), settings.delivery_limit)
    assert bus._connection is not None
    for exchange in ours["exchanges"]:
        channel = await bus._connection.channel()
        await channel.declare_exchange(exchange["name"], aio_pika.ExchangeType.TOPIC,
                                       durable=exchange["durable"])
        await channel.close()
    for queue in ours["queues"]:
        if queue["name"].split(".intake.", 1)[1].startswith("outbound."):
            continue  # a sender's queue: declared when that connector runs
        channel = await bus._connection.channel()
        # Refused (PRECONDITION_FAILED, the channel closes) if any argument differs.
        await channel.declare_queue(queue["name"], durable=True, arguments=queue["arguments"])
        await channel.close()


@pytest.fixture
def service_user(settings: IntakeSettings) -> Iterator[Callable[[str], IntakeSettings]]:
    """`login(service)`: settings that connect as that service's user of the definitions."""
    ctl = tool("rabbitmqctl")
    ours = definitions(services(), Names(settings.bus_prefix))
    created: list[str] = []

    def login(service: str) -> IntakeSettings:
        permission = next(p for p in ours["permissions"] if p["user"] == service)
        user = f"{settings.bus_prefix}-{service}"
        subprocess.run([ctl, "-q", "add_user", user, "pw-" + user], check=True, timeout=60,
                       capture_output=True)
        created.append(user)
        subprocess.run([ctl, "-q", "set_permissions", "-p", "/", user, permission["configure"],
                        permission["write"], permission["read"]], check=True, timeout=60,
                       capture_output=True)
        return settings.model_copy(update={
            "amqp_url": f"amqp://{user}:pw-{user}@127.0.0.1:5672/"})

    yield login
    for user in created:
        subprocess.run([ctl, "-q", "delete_user", user], check=False, timeout=60,
                       capture_output=True)


@pytest.mark.parametrize(("service", "allowed", "refused"), [
    ("webform", "inbound", "routed"),
    ("router", "routed", "outbound"),
    ("ticket-core", "events", "inbound"),
])
async def test_each_user_may_do_what_its_service_does_and_no_more(
        service_user: Callable[[str], IntakeSettings], settings: IntakeSettings,
        service: str, allowed: str, refused: str) -> None:
    bus = Bus(service_user(service), service)
    try:
        # At connect the service declares the whole core topology: configure, bind rights.
        await bus.connect(timeout=20)
        await bus.publish(allowed, "webform.contact", b"{}", mandatory=False)
        with pytest.raises(Exception, match="ACCESS_REFUSED"):
            await bus.publish(refused, "webform.contact", b"{}", mandatory=False, timeout=5)
    finally:
        admin = Bus(settings, "cleanup")
        await admin.connect(timeout=15)
        await delete_topology(admin)
        await admin.close()
        await bus.close()
