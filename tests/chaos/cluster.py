"""The gateway on a real three-node RabbitMQ cluster (`cluster_leader_kill`).

Three `RabbitNode`s on their own ports, the second and third joined to the first; the services
start only once the cluster has formed (a quorum queue declared on a lone node keeps one
member), with `INTAKE_AMQP_URL` listing all three nodes, so each starts at a random one. During
the stream the node leading `intake.ticket_core` is killed (kill -9) and started again (it
rejoins), then the node leading `intake.router`. Nothing may be lost or doubled, and every
service must reconnect to a live node by itself: none is restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from .harness import Gateway, RabbitNode
from .scenarios import Lab, Result, Run

RABBITMQ_QUEUES = "/usr/lib/rabbitmq/bin/rabbitmq-queues"
RESULTS = Path(__file__).resolve().parent / "results"
MEMBERS = 3


@dataclass
class Cluster:
    nodes: list[RabbitNode]

    @classmethod
    def form(cls, make_node: Callable[[int], RabbitNode] = lambda _index: RabbitNode(),
             ) -> Cluster:
        """Start three nodes (`make_node(i)` makes the i-th) and join them into a cluster."""
        nodes = [make_node(index) for index in range(MEMBERS)]
        try:
            nodes[0].start()
            for node in nodes[1:]:
                node.start()
                for step in (("stop_app",), ("join_cluster", nodes[0].node), ("start_app",)):
                    result = node.ctl(*step, timeout=120)
                    if result.returncode != 0:
                        raise RuntimeError(f"{node.node}: rabbitmqctl {' '.join(step)} failed: "
                                           f"{result.stdout}{result.stderr}")
                node.wait_ready(90)
            running = cls(nodes).running_nodes()
            if len(running) != MEMBERS:
                raise RuntimeError(f"the cluster formed with {running}")
        except BaseException:
            for node in nodes:
                node.destroy()
            raise
        return cls(nodes)

    @property
    def amqp_url(self) -> str:
        return ",".join(node.url for node in self.nodes)

    def live(self) -> RabbitNode:
        return next(node for node in self.nodes if node.proc is not None)

    def running_nodes(self) -> list[str]:
        result = self.live().ctl("cluster_status", "--formatter", "json")
        return sorted(json.loads(result.stdout).get("running_nodes", []))

    def queues_ctl(self, *args: str) -> str:
        """`rabbitmq-queues ARGS` on a live node; what it printed (RuntimeError on failure)."""
        node = self.live()
        result = subprocess.run(
            [RABBITMQ_QUEUES, "-n", node.node, *args],
            env=node._env(), user="rabbitmq", group="rabbitmq", extra_groups=[],
            capture_output=True, text=True, timeout=60, check=False, cwd=node.base)
        if result.returncode != 0:
            raise RuntimeError(f"rabbitmq-queues {' '.join(args)}: {result.stdout}"
                               f"{result.stderr}")
        return result.stdout

    def quorum_status(self, queue: str) -> list[dict[str, str]]:
        rows: list[dict[str, str]] = json.loads(
            self.queues_ctl("quorum_status", queue, "--formatter", "json"))
        return rows

    def leader(self, queue: str) -> RabbitNode:
        for row in self.quorum_status(queue):
            state = str(row.get("Raft State", row.get("raft_state", "")))
            if state == "leader":
                name = str(row.get("Node Name", row.get("node_name", "")))
                return next(node for node in self.nodes if node.node == name)
        raise RuntimeError(f"no leader for {queue}: {self.quorum_status(queue)}")

    def connections_per_node(self) -> dict[str, int]:
        """Client connections each running node holds (3.10's list_connections has no node)."""
        counts: dict[str, int] = {}
        for node in self.nodes:
            if node.proc is None:
                continue
            result = node.ctl("eval", "length(rabbit_networking:local_connections()).")
            if result.returncode == 0 and result.stdout.strip().isdigit():
                counts[node.node] = int(result.stdout.strip())
        return counts

    def destroy(self) -> None:
        for node in self.nodes:
            node.destroy()


@contextlib.asynccontextmanager
async def cluster_run(lab: Lab, cluster: Cluster) -> AsyncIterator[Run]:
    """A `Run` whose gateway uses the cluster's three nodes (its checks read a live node)."""
    run_id = f"cluster{uuid.uuid4().hex[:6]}"
    database_url = await lab.postgres.create_database(f"chaos_{run_id}")
    workdir = lab.workdir / run_id
    workdir.mkdir(parents=True)
    gateway = Gateway(workdir, cluster.amqp_url, database_url, prefix=f"chaos{run_id}")
    on_cluster = Lab(cluster.nodes[0], lab.postgres, lab.workdir, rate=lab.rate,
                     settle_s=lab.settle_s)
    async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=64, force_close=False)) as http:
        await gateway.start(http)
        run = Run(on_cluster, "cluster_leader_kill", gateway, database_url, http, run_id)
        try:
            yield run
        finally:
            print(f"   stopped in {await gateway.stop()}", flush=True)
            _keep_logs(workdir, cluster, run_id)


def _keep_logs(workdir: Path, cluster: Cluster, run_id: str) -> None:
    """The services' and the nodes' logs, kept beside the results (the lab is removed)."""
    keep = RESULTS / f"logs-{run_id}"
    keep.mkdir(parents=True, exist_ok=True)
    for log in workdir.glob("*.log"):
        shutil.copy(log, keep / log.name)
    for node in cluster.nodes:
        for log in (node.base / "log").glob("*.log"):
            shutil.copy(log, keep / f"{node.node.split('@')[0]}-{log.name}")


async def _all_ready(run: Run, timeout: float) -> float | None:
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        codes = [await service.readyz(run.http) for service in run.gateway.services.values()]
        if all(code == 200 for code in codes):
            return round(time.monotonic() - began, 2)
        await asyncio.sleep(0.2)
    return None


async def cluster_leader_kill(lab: Lab, count: int, *, down_s: float = 5.0) -> Result:
    """Kill -9 the node leading `intake.ticket_core`, then the one leading `intake.router`."""
    cluster = await asyncio.to_thread(Cluster.form)
    try:
        async with cluster_run(lab, cluster) as run:
            prefix = run.gateway.prefix
            members = {logical: len(await asyncio.to_thread(
                cluster.quorum_status, f"{prefix}.intake.{logical}"))
                for logical in ("router", "ticket_core", "ticket_core.delivery")}
            run.notes["quorum_members"] = members
            if any(n != MEMBERS for n in members.values()):
                run.problems.append(f"quorum queues without {MEMBERS} members: {members}")
            run.notes["connections_per_node_at_start"] = await asyncio.to_thread(
                cluster.connections_per_node)
            driver = run.driver(count)
            load = asyncio.ensure_future(driver.run(run.http))
            recovered: dict[str, float | None] = {}
            for step, logical in enumerate(("ticket_core", "router")):
                await driver.reached((step + 1) / 3)
                leader = await asyncio.to_thread(cluster.leader, f"{prefix}.intake.{logical}")
                await asyncio.to_thread(leader.kill)
                run.fault(f"kill -9 {leader.node}, leader of intake.{logical}")
                await asyncio.sleep(down_s)
                await asyncio.to_thread(leader.start)
                run.fault(f"{leader.node} started again, rejoined")
                recovered[logical] = await _all_ready(run, 60)
                if recovered[logical] is None:
                    run.problems.append(f"not every service ready 60 s after the kill of "
                                        f"the intake.{logical} leader")
            await load
            result = await run.finish(driver, "three-node cluster: the leaders of "
                                              "intake.ticket_core and intake.router killed",
                                      timeout=120.0)
            result.notes["all_ready_after_restart_s"] = recovered
            result.notes["connections_per_node_at_end"] = await asyncio.to_thread(
                cluster.connections_per_node)
            restarted = {name: service.starts for name, service in
                         run.gateway.services.items() if service.starts != 1}
            if restarted:
                result.problems.append(f"services restarted: {restarted}")
            return result
    finally:
        await asyncio.to_thread(cluster.destroy)
