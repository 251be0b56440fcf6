"""`intake doctor` on a three-node RabbitMQ cluster of its own, through the management API.

The nodes run `rabbitmq_management`; the third runs 30 s ahead (libfaketime on its VM only).
On the gateway's topology, doctor must name: that clock, policies that cut the gateway's
delivery limit or drop messages, policies that hide each other, a queue with a member
removed, and members offline once a node is killed. The shared broker has no management
plugin (and must not be reconfigured), so this runs here, beside the chaos scenarios.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from intake.bus import Bus
from intake.bus.topology import Names
from intake.deploy.catalog import services
from intake.deploy.rabbitmq import definitions
from intake.doctor import Finding, check_broker
from intake.settings import IntakeSettings

from . import scenarios  # noqa: F401  (before .cluster, which it imports in turn)
from .cluster import Cluster
from .harness import HarnessUnavailable, RabbitNode, check_prerequisites, free_port

FAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
AHEAD_S = 30
STATS_S = 6  # the management API's figures are up to a statistics interval (5 s) old
IN_CI = os.environ.get("CI") == "true"


class ManagedNode(RabbitNode):
    """A chaos node with the management API on a port of its own; its clock `ahead_s` off."""

    def __init__(self, ahead_s: int = 0) -> None:
        super().__init__()
        self.management_port = free_port()
        self.ahead_s = ahead_s
        config = self.base / "rabbitmq.conf"
        config.write_text(config.read_text() + f"management.tcp.port = {self.management_port}\n"
                          "management.tcp.ip = 127.0.0.1\n")
        (self.base / "enabled_plugins").write_text("[rabbitmq_management].\n")

    @property
    def management_url(self) -> str:
        return f"http://guest:guest@127.0.0.1:{self.management_port}"

    def _env(self) -> dict[str, str]:
        env = super()._env()
        if self.ahead_s:
            # Only the wall clock: the VM's monotonic time (timers, Raft) stays true.
            env.update({"LD_PRELOAD": str(FAKETIME), "FAKETIME": f"+{self.ahead_s}s",
                        "FAKETIME_DONT_FAKE_MONOTONIC": "1"})
        return env


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    try:
        check_prerequisites()
        if not FAKETIME.exists():
            raise HarnessUnavailable(f"{FAKETIME} missing (apt-get install libfaketime)")
    except HarnessUnavailable as exc:
        if IN_CI:
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    formed = Cluster.form(lambda index: ManagedNode(ahead_s=AHEAD_S if index == 2 else 0))
    try:
        yield formed
    finally:
        formed.destroy()


def lines(findings: list[Finding], level: str = "PROBLEM") -> str:
    return "\n".join(f.line() for f in findings if f.line().startswith(level))


def policy(cluster: Cluster, name: str, pattern: str, definition: dict[str, object],
           priority: int) -> None:
    result = cluster.live().ctl("set_policy", "--apply-to", "queues", "--priority",
                                str(priority), name, pattern, json.dumps(definition))
    assert result.returncode == 0, result.stderr


@pytest.mark.rabbitmq
@pytest.mark.timeout(330)
def test_doctor_names_members_policies_and_clocks(cluster: Cluster, tmp_path: Path) -> None:
    asyncio.run(_doctor_on(cluster, tmp_path))


async def _doctor_on(cluster: Cluster, tmp_path: Path) -> None:
    prefix = f"doc{uuid.uuid4().hex[:6]}"
    names = Names(prefix)
    settings = IntakeSettings(amqp_url=cluster.amqp_url, bus_prefix=prefix, data_dir=tmp_path)
    management = [node.management_url for node in cluster.nodes]  # type: ignore[attr-defined]
    bus = Bus(settings.model_copy(update={"amqp_url": cluster.nodes[0].url}), "doctor-test")
    await bus.connect(timeout=30)  # declares the core topology: three members each
    try:
        healthy = await check_broker(settings, management)
        ok_lines = lines(healthy, "ok")
        for logical in ("router", "ticket_core", "ticket_core.delivery"):
            assert f"queue {names(logical)}: 3 member(s) online" in ok_lines, ok_lines
        problems = lines(healthy)
        assert "quorum" not in problems and "policy" not in problems, problems
        ahead = cluster.nodes[2]
        assert f"127.0.0.1:{ahead.port} (management 127.0.0.1:" in problems  # its clock
        assert "s ahead of this host's" in problems and "clocks differ by" in problems
        for node in cluster.nodes[:2]:
            assert f"127.0.0.1:{node.port} (management" not in problems, problems

        # The definitions file (this run's names) imports on the real node, and its length
        # policy is no conflict; then a tighter policy that hides it on one queue and lowers
        # the delivery limit, and two at one priority on another queue.
        ours = definitions(services(), names)
        ours["users"] = ours["permissions"] = []  # the node's users stay as they are
        imported = cluster.live().base / "definitions.json"  # where its user may read
        imported.write_text(json.dumps(ours))
        shutil.chown(imported, "rabbitmq", "rabbitmq")
        result = cluster.live().ctl("import_definitions", str(imported))
        assert result.returncode == 0, result.stdout + result.stderr
        assert "policy" not in lines(await check_broker(settings, management))
        policy(cluster, "tight", f"^{prefix}\\.intake\\.ticket_core$",
               {"delivery-limit": 2, "overflow": "drop-head"}, 5)
        policy(cluster, "ttl-a", f"^{prefix}\\.intake\\.router$", {"message-ttl": 60000}, 3)
        policy(cluster, "ttl-b", f"^{prefix}\\.intake\\.router$", {"expires": 600000}, 3)
        cluster.queues_ctl("delete_member", names("ticket_core.delivery"), ahead.node)
        shrunk = (f"queue {names('ticket_core.delivery')}: 2 member(s) on a cluster of 3 "
                  "running nodes")
        # The member list, too, is the management API's sampled view (as after the kill below).
        for _ in range(12):
            await asyncio.sleep(STATS_S)
            problems = lines(await check_broker(settings, management))
            if shrunk in problems:
                break
        core = f"queue {names('ticket_core')}"
        assert f"{core}: tight sets delivery-limit 2, under the 11 the gateway" in problems
        assert f"{core}: tight sets overflow drop-head" in problems
        assert (f"{core}: policy intake-work-queue-length is hidden by tight (priority 5): "
                "its max-length do not apply") in problems
        assert (f"queue {names('router')}: policies ttl-a, ttl-b match it at the same "
                "priority") in problems
        assert f"queue {names('router')}: ttl-a sets message-ttl 60000" in problems
        assert f"queue {names('router')}: ttl-b sets expires 600000" in problems
        assert shrunk in problems, problems
        assert f"queue {names('dead')}" not in problems  # the stream is untouched

        # A node killed: its members offline on every queue, its AMQP port unreachable.
        down = cluster.nodes[1]
        await asyncio.to_thread(down.kill)
        offline = f"queue {names('router')}: member(s) offline: {down.node} (2 of 3 online)"
        # The management API's view of the members lags the kill (statistics are sampled, and
        # a loaded machine adds seconds): ask again until it shows, or the time is up.
        for _ in range(12):
            await asyncio.sleep(STATS_S)
            findings = await check_broker(settings, management)
            problems = lines(findings)
            if offline in problems:
                break
        assert f"127.0.0.1:{down.port}: unreachable" in problems
        assert offline in problems, problems
        assert f"127.0.0.1:{down.port} (management" in lines(findings, "note")
        assert "guest" not in "\n".join(f.line() for f in findings)
    finally:
        await bus.close()
