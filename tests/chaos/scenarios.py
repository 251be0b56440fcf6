"""The chaos scenarios: a stream of form submissions while the broker, the database and the
services fail; each ends with the count by idempotency key (tests/chaos/README.md)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import random
import shutil
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from .harness import (
    INTAKE,
    REPO,
    Gateway,
    LoadDriver,
    Outcome,
    PostgresNode,
    RabbitNode,
    ServiceProcess,
    check,
    dead_letters,
    queue_depths,
    read_persisted,
    wait_persisted,
)


@dataclass
class Lab:
    """The broker node and the PostgreSQL every scenario of a run shares (each its own names)."""

    rabbit: RabbitNode
    postgres: PostgresNode
    workdir: Path
    rate: float | None = None  # submissions per second; None = as fast as the gateway takes
    settle_s: float = 2.0  # after the last key is stored, how long late duplicates may come

    @classmethod
    def start(cls) -> Lab:
        rabbit = RabbitNode()
        postgres = PostgresNode()
        try:
            rabbit.start()
            postgres.start()
        except BaseException:
            rabbit.destroy()
            postgres.destroy()
            raise
        return cls(rabbit, postgres, Path(tempfile.mkdtemp(prefix="intake-chaos-")))

    def destroy(self) -> None:
        self.rabbit.destroy()
        self.postgres.destroy()
        shutil.rmtree(self.workdir, ignore_errors=True)


@dataclass
class Result:
    name: str
    title: str
    outcome: Outcome
    dead: dict[str, int]
    faults: list[str]
    seconds: float
    notes: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (self.outcome.lost == 0 and self.outcome.duplicated_messages == 0
                and self.outcome.duplicated_tickets == 0 and not self.problems)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "title": self.title, "ok": self.ok,
                **self.outcome.as_dict(), "dead_lettered": self.dead, "faults": self.faults,
                "seconds": round(self.seconds, 1), "notes": self.notes,
                "problems": self.problems}


@dataclass
class Run:
    """One scenario's gateway, database, client session and fault log."""

    lab: Lab
    name: str
    gateway: Gateway
    database_url: str
    http: aiohttp.ClientSession
    run_id: str
    began: float = field(default_factory=time.monotonic)
    faults: list[str] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def driver(self, count: int) -> LoadDriver:
        return LoadDriver(self.gateway, self.run_id, count, rate=self.lab.rate)

    def fault(self, what: str) -> None:
        self.faults.append(f"{time.monotonic() - self.began:6.1f}s {what}")

    async def finish(self, driver: LoadDriver, title: str, *, extra_tickets: int = 0,
                     timeout: float = 180.0) -> Result:
        await wait_persisted(driver, self.database_url, timeout)
        await asyncio.sleep(self.lab.settle_s)  # late redeliveries would show up as doubles
        outcome = await check(driver, self.database_url, extra_tickets=extra_tickets)
        letters = await dead_letters(self.lab.rabbit.url, self.gateway.prefix)
        dead = Counter(letter.reason for letter in letters)
        self.notes.setdefault("statuses", dict(sorted(driver.statuses.items())))
        self.notes.setdefault("crash_restarts", dict(self.gateway.crashes))
        if outcome.lost:
            depths = await queue_depths(self.lab.rabbit.url, self.gateway.prefix)
            self.notes["queue_depths_at_end"] = depths
        return Result(self.name, title, outcome, dict(dead), self.faults,
                      time.monotonic() - self.began, self.notes, self.problems)


@contextlib.asynccontextmanager
async def scenario(lab: Lab, name: str, *, fault: dict[str, str] | None = None,
                   webform_data_dir: Path | None = None) -> AsyncIterator[Run]:
    run_id = f"{name[:10]}{uuid.uuid4().hex[:6]}"
    database_url = await lab.postgres.create_database(f"chaos_{run_id}")
    workdir = lab.workdir / run_id
    workdir.mkdir(parents=True)
    gateway = Gateway(workdir, lab.rabbit.url, database_url, prefix=f"chaos{run_id}",
                      fault=fault, webform_data_dir=webform_data_dir)
    async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=64, force_close=False)) as http:
        await gateway.start(http)
        run = Run(lab, name, gateway, database_url, http, run_id)
        try:
            yield run
        finally:
            print(f"   stopped in {await gateway.stop()}", flush=True)


def _background(coro: Awaitable[None]) -> asyncio.Task[None]:
    return asyncio.ensure_future(coro)


# -- 1. broker restarts ------------------------------------------------------------------


async def broker_restarts(lab: Lab, count: int, *, restarts: int = 5,
                          down_s: float = 2.0) -> Result:
    """The broker goes away 5 times during the stream: graceful stops and kill -9 in turn."""
    async with scenario(lab, "broker_restarts") as run:
        driver = run.driver(count)
        load = _background(driver.run(run.http))
        for i in range(restarts):
            await driver.reached((i + 1) / (restarts + 1))
            if i % 2 == 0:
                await asyncio.to_thread(lab.rabbit.kill)
                run.fault("broker kill -9")
            else:
                await asyncio.to_thread(lab.rabbit.stop)
                run.fault("broker graceful stop")
            await asyncio.sleep(down_s)
            await asyncio.to_thread(lab.rabbit.start)
            run.fault("broker back")
        await load
        return await run.finish(driver, f"broker restarted {restarts} times "
                                        "(kill -9 and graceful stop in turn)")


# -- 2. services killed ------------------------------------------------------------------


async def service_kills(lab: Lab, count: int, *, kills: int = 8,
                        crash_after_commit: float = 0.01) -> Result:
    """SIGKILL of the router and the ticket core at random moments, plus the commit/ack hook."""
    fault = {"ticket-core": f"crash_after_commit:{crash_after_commit}"}
    async with scenario(lab, "service_kills", fault=fault) as run:
        run.gateway.supervise(run.http)
        driver = run.driver(count)
        load = _background(driver.run(run.http))
        rng = random.Random(count)
        for i in range(kills):
            await driver.reached((i + 1) / (kills + 1))
            await asyncio.sleep(rng.random() * 0.5)
            name = rng.choice(("router", "ticket-core"))
            service = run.gateway[name]
            if service.proc is not None:
                service.proc.kill()  # the supervisor restarts it
                run.gateway.crashes[name] -= 1  # count it as a kill, not a crash
                run.fault(f"SIGKILL {name}")
        await load
        result = await run.finish(driver, "router and ticket core SIGKILLed, and crashed "
                                          "between commit and ack")
        result.notes["crash_after_commit_exits"] = result.notes["crash_restarts"].get(
            "ticket-core", 0)
        return result


# -- 3. broker down for 30 s, then the outbox full --------------------------------------


async def broker_outage(lab: Lab, count: int, *, down_s: float = 30.0) -> Result:
    """The web form's broker is down: 201 from the fsynced outbox, drained in order after."""
    async with scenario(lab, "broker_outage") as run:
        driver = run.driver(count)
        load = _background(driver.run(run.http))
        await driver.reached(0.25)
        before = Counter(driver.statuses)
        await asyncio.to_thread(lab.rabbit.stop)
        down_at = time.time()
        run.fault("broker stopped")
        ready_while_down = await run.gateway["webform"].readyz(run.http)
        await asyncio.sleep(down_s)
        during = Counter(driver.statuses) - before
        accepted_down = sum(n for status, n in during.items() if 200 <= status < 300)
        await asyncio.to_thread(lab.rabbit.start)
        up_at = time.time()
        run.fault(f"broker back after {up_at - down_at:.0f}s")
        await load
        result = await run.finish(driver, f"broker down for {down_s:.0f} s")
        result.notes.update({
            "accepted_while_down": accepted_down,
            "statuses_while_down": dict(during),
            "webform_readyz_while_down": ready_while_down,
        })
        if accepted_down == 0:
            result.problems.append("the web form accepted nothing while the broker was down")
        non_2xx = {s: n for s, n in during.items() if not 200 <= s < 300}
        if non_2xx:
            result.problems.append(f"refusals while the broker was down: {non_2xx}")
        # Drained in order: among submissions taken into the outbox, a later one is never
        # stored before an earlier one (persisted_at is per batch, so ties are fine).
        rows = await read_persisted(run.database_url, f"webform:contact:{run.run_id}-%")
        persisted = {key: at.timestamp() for key, _, at in rows}
        outboxed = sorted((s.accepted_at, key) for key, s in driver.accepted.items()
                          if s.accepted_at and down_at + 0.5 < s.accepted_at < up_at
                          and key in persisted)
        inversions = sum(1 for (_, a), (_, b) in itertools.pairwise(outboxed)
                         if persisted[b] < persisted[a])
        result.notes["outboxed_order_inversions"] = inversions
        return result


def _mount_tmpfs(path: Path, size: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                    str(path)], check=True)


def _remount(path: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True)


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], check=False)


async def outbox_full(lab: Lab, count: int, *, down_s: float = 10.0) -> Result:
    """Broker down and the outbox's disk full: 503 (never a false 201), nothing accepted lost.

    The outbox folder is a 64 KiB tmpfs. Once the broker is back the outbox drains; then the
    disk is made larger (ops freed space) and the stream completes.
    """
    data = lab.workdir / f"webform-full-{uuid.uuid4().hex[:6]}"
    outbox_dir = data / "outbox"
    _mount_tmpfs(outbox_dir, "64k")
    try:
        async with scenario(lab, "outbox_full", webform_data_dir=data) as run:
            driver = run.driver(count)
            load = _background(driver.run(run.http))
            await driver.reached(0.2)
            before = Counter(driver.statuses)
            # kill -9, not a graceful stop: that takes seconds here, and a quick run's whole
            # stream (3 s) had gone to the broker before it was down.
            await asyncio.to_thread(lab.rabbit.kill)
            run.fault("broker kill -9, outbox on a 64 KiB tmpfs")
            await asyncio.sleep(down_s)
            during = Counter(driver.statuses) - before
            await asyncio.to_thread(lab.rabbit.start)
            run.fault("broker back")
            await asyncio.sleep(1)
            _remount(outbox_dir, "16m")
            run.fault("outbox disk grown to 16 MiB")
            await load
            result = await run.finish(driver, "broker down and the outbox's disk full")
            result.notes["statuses_while_down"] = dict(during)
            if not during.get(503):
                result.problems.append("no 503 while the outbox could not be written")
            return result
    finally:
        _umount(outbox_dir)


# -- 4. PostgreSQL restarts --------------------------------------------------------------


async def postgres_restart(lab: Lab, count: int, *, down_s: float = 5.0) -> Result:
    """PostgreSQL stops (fast, then kill -9) during the stream; /readyz tells the truth."""
    async with scenario(lab, "postgres_restart") as run:
        run.gateway.supervise(run.http)
        core = run.gateway["ticket-core"]
        probes: list[tuple[float, int]] = []

        ready = asyncio.Event()

        async def probe() -> None:
            while True:
                began = time.monotonic()
                status = await core.readyz(run.http)
                probes.append((began, status))
                if status == 200:
                    ready.set()
                else:
                    ready.clear()
                await asyncio.sleep(0.25)

        async def wait_ready() -> None:
            ready.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ready.wait(), 20)

        prober = _background(probe())
        driver = run.driver(count)
        load = _background(driver.run(run.http))
        windows: list[tuple[float, float]] = []
        for i, how in enumerate(("fast stop", "kill -9")):
            await driver.reached((i + 1) / 3)
            await asyncio.to_thread(lab.postgres.stop if i == 0 else lab.postgres.kill)
            down = time.monotonic()
            run.fault(f"PostgreSQL {how}")
            await asyncio.sleep(down_s)
            await asyncio.to_thread(lab.postgres.start)
            up = time.monotonic()
            windows.append((down, up))
            run.fault("PostgreSQL back")
            # The next fault only once the ticket core says it is ready again (or 20 s passed).
            await wait_ready()
        await load
        result = await run.finish(driver, "PostgreSQL restarted twice (fast stop, kill -9)")
        prober.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await prober
        for down, up in windows:
            # Give /readyz one probe interval plus its own check time to notice.
            inside = [s for t, s in probes if down + 1.5 < t < up - 0.1]
            after = [s for t, s in probes if up < t < up + 20]
            ready_after = next((t - up for t, s in probes if t > up and s == 200), None)
            result.notes.setdefault("readyz_200_after_restart_s", []).append(
                None if ready_after is None else round(ready_after, 1))
            if not inside or any(s != 503 for s in inside):
                result.problems.append(f"/readyz while the database was down: {Counter(inside)}")
            if 200 not in after:
                result.problems.append("/readyz did not say 200 within 20 s of the restart")
        result.notes["readyz_probes"] = dict(Counter(s for _, s in probes))
        if result.notes["crash_restarts"].get("ticket-core"):
            result.problems.append("the ticket core exited while the database was down")
        return result


# -- 5. poison and schema-invalid messages -----------------------------------------------


def _message(ref: str, run_id: str, **update: Any) -> Any:
    from intake.message import Identity, Message, Sender, utcnow

    return Message(
        idempotency_key=f"webform:contact:{run_id}-poison-{ref}", channel="webform",
        account="contact", kind="form_submission",
        sender=Sender(name="Poison", identities=[Identity(kind="email",
                                                          value=f"{ref}@poison.example")]),
        subject=f"poison {ref}", text="a message the store cannot take", received_at=utcnow(),
        **update)


def _route(desk: str) -> Any:
    from intake.message import RouteDecision, RouteDelivery

    return RouteDecision(decision_id=uuid.uuid4().hex, revision="0" * 64, route="chaos",
                         deliveries=[RouteDelivery(desk=desk)])


async def _publish(lab: Lab, prefix: str, exchange: str, key: str, body: bytes) -> None:
    from intake.bus import Bus
    from intake.settings import IntakeSettings

    bus = Bus(IntakeSettings(amqp_url=lab.rabbit.url, bus_prefix=prefix), "chaos-poison")
    await bus.connect(timeout=30)
    try:
        await bus.publish(exchange, key, body)
    finally:
        await bus.close()


def _intake_cli(run: Run, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTAKE_")}
    env.update(INTAKE_AMQP_URL=run.lab.rabbit.url, INTAKE_BUS_PREFIX=run.gateway.prefix)
    return subprocess.run([str(INTAKE), *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=60, check=False)


async def poison(lab: Lab, count: int) -> Result:
    """A message PostgreSQL cannot store, a schema-invalid one and an unrouted one mid-stream.

    Each must end in intake.dead with its reason while the stream flows past; then
    `intake dlq replay ID --body FILE` brings the repaired ones in exactly once.
    """
    async with scenario(lab, "poison") as run:
        driver = run.driver(count)
        load = _background(driver.run(run.http))
        await driver.reached(0.3)
        prefix = run.gateway.prefix
        # A valid routed message whose desk (from a misconfigured router) is over its column's
        # 128 characters: PostgreSQL refuses it on every delivery.
        too_long = _message("too-long", run.run_id, route=_route("d" * 300))
        await _publish(lab, prefix, "routed", "general", too_long.model_dump_json().encode())
        invalid = _message("invalid", run.run_id).model_dump(mode="json")
        invalid["channel"] = "carrier-pigeon"
        await _publish(lab, prefix, "inbound", "webform.contact", json.dumps(invalid).encode())
        unrouted = _message("unrouted", run.run_id)
        await _publish(lab, prefix, "routed", "general", unrouted.model_dump_json().encode())
        run.fault("published a too-long desk, a schema-invalid channel, an unrouted message")
        await load
        result = await run.finish(driver, "poison, schema-invalid and unrouted messages "
                                          "mid-stream, then repaired and replayed")
        letters = {json.loads(letter.body).get("idempotency_key"): letter
                   for letter in await dead_letters(lab.rabbit.url, prefix)}
        expected = {too_long.idempotency_key: "unpersistable",
                    invalid["idempotency_key"]: "schema_invalid",
                    unrouted.idempotency_key: "not_routed"}
        for key, reason in expected.items():
            letter = letters.get(key)
            if letter is None:
                result.problems.append(f"{key} is not in intake.dead")
            elif letter.reason != reason:
                result.problems.append(f"{key} dead-lettered as {letter.reason}, not {reason}")
        # Repair and replay: the desk corrected, the channel corrected.
        repaired = {key: json.dumps({**json.loads(letters[key].body), **fix})
                    for key, fix in ((too_long.idempotency_key,
                                      {"route": _route("general").model_dump(mode="json")}),
                                     (invalid["idempotency_key"], {"channel": "webform"}))
                    if key in letters}
        replayed = 0
        for key, body in repaired.items():
            path = run.gateway.workdir / f"repaired-{letters[key].id}.json"
            path.write_text(body)
            done = await asyncio.to_thread(_intake_cli, run, "dlq", "replay", letters[key].id,
                                           "--body", str(path))
            if done.returncode != 0:
                result.problems.append(f"dlq replay failed: {done.stdout}{done.stderr}")
            replayed += 1
        deadline = time.monotonic() + 30
        rows: list[Any] = []
        while time.monotonic() < deadline:
            rows = await read_persisted(run.database_url, f"webform:contact:{run.run_id}-poison-%")
            if len(rows) >= replayed:
                break
            await asyncio.sleep(0.5)
        await asyncio.sleep(lab.settle_s)
        rows = await read_persisted(run.database_url, f"webform:contact:{run.run_id}-poison-%")
        stored = Counter(key for key, _, _ in rows)
        for key in (too_long.idempotency_key, invalid["idempotency_key"]):
            if stored.get(key) != 1:
                result.problems.append(f"replayed {key} stored {stored.get(key, 0)} times")
        if unrouted.idempotency_key in stored:
            result.problems.append("the unrouted message was stored")
        result.notes["replayed_and_stored"] = sum(stored.get(k) == 1 for k in repaired)
        result.dead = dict(Counter(letter.reason for letter in letters.values()))
        return result


# -- 6. graceful shutdown under load -----------------------------------------------------


async def graceful_shutdown(lab: Lab, count: int, *, rounds: int = 2) -> Result:
    """SIGTERM to every service mid-stream: in-flight work finishes, exit 0, no duplicate."""
    async with scenario(lab, "graceful_shutdown") as run:
        driver = run.driver(count)
        load = _background(driver.run(run.http))
        exits: list[dict[str, Any]] = []
        for i in range(rounds):
            await driver.reached((i + 1) / (rounds + 1))
            began = time.monotonic()
            names = list(run.gateway.services)
            codes = await asyncio.gather(*(asyncio.to_thread(run.gateway[n].terminate)
                                           for n in names))
            took = time.monotonic() - began
            run.fault(f"SIGTERM to every service (stopped in {took:.1f}s)")
            exits.append({"codes": dict(zip(names, codes, strict=True)),
                          "seconds": round(took, 2)})
            for name, code in zip(names, codes, strict=True):
                if code != 0:
                    result_problem = f"{name} exited with {code} after SIGTERM"
                    run.problems.append(result_problem)
            await asyncio.sleep(1.0)
            await run.gateway.start(run.http)
            run.fault("services restarted")
        await load
        result = await run.finish(driver, "graceful shutdown (SIGTERM to every service) "
                                          f"{rounds} times under load")
        result.notes["exits"] = exits
        return result


# -- 7. the web form killed while it drains its outbox ------------------------------------


async def _wait_until(what: Callable[[], Awaitable[bool]], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await what():
            return True
        await asyncio.sleep(0.05)
    return False


async def webform_kill_mid_drain(lab: Lab, count: int, *, down_s: float = 10.0) -> Result:
    """The web form SIGKILLed while draining its outbox, restarted: nothing lost or doubled.

    The broker is killed while submissions flow, so the web form answers from its fsynced
    outbox. The broker comes back with its memory alarm raised: the web form reconnects and
    its drain starts publishing, but the broker stops reading a publishing connection, so the
    drain is caught in the middle (some publishes may have reached the broker, none is
    confirmed, nothing is deleted). Then SIGKILL, the alarm cleared, and the web form started
    again on the same outbox: it publishes the lot again, and the idempotency key absorbs
    what had reached the broker before.
    """
    async with scenario(lab, "webform_kill_mid_drain") as run:
        webform = run.gateway["webform"]
        driver = run.driver(count)
        load = _background(driver.run(run.http))
        await driver.reached(0.2)
        await asyncio.to_thread(lab.rabbit.kill)  # at once: the stream goes on into the outbox
        run.fault("broker kill -9")
        await asyncio.sleep(down_s)
        depth_before = (await webform.ready_body(run.http)).get("outbox_depth", 0)
        await asyncio.to_thread(lab.rabbit.start, memory_alarm=True)
        run.fault(f"broker back with its memory alarm raised (outbox {depth_before})")

        async def draining() -> bool:
            return (await webform.ready_body(run.http)).get("broker") == "up"

        if not await _wait_until(draining, 30):
            run.problems.append("the web form did not reconnect within 30 s")
        await asyncio.sleep(1.0)  # its drain is publishing now, blocked unconfirmed
        depth_at_kill = (await webform.ready_body(run.http)).get("outbox_depth", 0)
        webform.kill()
        run.fault(f"SIGKILL web form while draining (outbox {depth_at_kill})")
        await asyncio.to_thread(lab.rabbit.clear_memory_alarm)
        run.fault("memory alarm cleared")
        webform.start()
        await webform.wait_healthy(run.http)
        run.fault("web form restarted on the same outbox")
        await load
        result = await run.finish(driver, "web form SIGKILLed while draining its outbox")
        result.notes.update({"outbox_before_broker_back": depth_before,
                             "outbox_at_kill": depth_at_kill})
        if not depth_at_kill:
            result.problems.append("the outbox was empty at the kill: not killed mid-drain")
        return result


# -- 8. a queue deleted mid-stream ---------------------------------------------------------


async def queue_deleted(lab: Lab, count: int, *, deletions: int = 4) -> Result:
    """`rabbitmqctl delete_queue` of the router's and the ticket core's queue mid-stream.

    The consumer sees its queue go (`basic.cancel`), declares and binds it again and goes on;
    meanwhile what the web form and the router publish comes back unroutable and is retried.
    Every accepted submission must become one ticket, nothing dead-lettered, and `/readyz`
    of both services 200 again within seconds.
    """
    async with scenario(lab, "queue_deleted") as run:
        driver = run.driver(count)
        load = _background(driver.run(run.http))
        services = {"router": run.gateway["router"], "ticket_core": run.gateway["ticket-core"]}
        back_after: list[float | None] = []
        deleting: list[tuple[float, float]] = []  # wall clock, as Submission.accepted_at
        for i in range(deletions):
            await driver.reached((i + 1) / (deletions + 1))
            logical = ("ticket_core", "router")[i % 2]
            began = time.time()
            said = await asyncio.to_thread(lab.rabbit.delete_queue,
                                           f"{run.gateway.prefix}.intake.{logical}")
            deleting.append((began - DELETE_RACE_LEAD_S, time.time() + DELETE_RACE_TAIL_S))
            deleted_at = time.monotonic()
            run.fault(f"delete_queue {logical}: {said.splitlines()[-1] if said else ''}")

            async def ready_again(service: ServiceProcess = services[logical],
                                  queue: str = logical) -> bool:
                return await service.readyz(run.http) == 200 and (
                    await _queue_exists(lab, run.gateway.prefix, queue))

            if await _wait_until(ready_again, 30):
                back_after.append(round(time.monotonic() - deleted_at, 2))
            else:
                back_after.append(None)
                run.problems.append(f"{logical} not back and ready 30 s after delete_queue")
        await load
        # A key lost to the deletion race never arrives: a minute (not three) tells.
        result = await run.finish(driver, f"router's and ticket core's queues deleted "
                                          f"{deletions} times mid-stream", timeout=60.0)
        result.notes["ready_again_after_s"] = back_after
        _excuse_delete_races(result, driver, deleting)
        if result.dead:
            result.problems.append(f"dead letters: {result.dead}")
        return result


# RabbitMQ confirms, positively, a publish still on its way to a queue that is being deleted
# (rabbit_channel's queue_event `eol`: "Deleted queue is a special case. Do not nack"): such a
# message is gone, and neither the web form nor the router can tell. A key lost with its
# acceptance inside a deletion (from a second before `delete_queue` began, as the router may
# still be forwarding it, to half a second after it returned) is that race, counted apart; any
# other lost key still fails the scenario.
DELETE_RACE_LEAD_S = 1.0
DELETE_RACE_TAIL_S = 0.5


def _excuse_delete_races(result: Result, driver: LoadDriver,
                         deleting: list[tuple[float, float]]) -> None:
    accepted = driver.accepted
    raced = [key for key in result.outcome.lost_keys
             if any(start <= (accepted[key].accepted_at or 0.0) <= end
                    for start, end in deleting)]
    if not raced:
        return
    result.notes["lost_to_delete_race"] = raced
    result.outcome.lost_keys = [key for key in result.outcome.lost_keys if key not in raced]
    result.outcome.lost = len(result.outcome.lost_keys)


async def _queue_exists(lab: Lab, prefix: str, logical: str) -> bool:
    import aio_pika

    connection = await aio_pika.connect(lab.rabbit.url)
    try:
        channel = await connection.channel()
        await channel.declare_queue(f"{prefix}.intake.{logical}", passive=True)
        return True
    except aio_pika.exceptions.ChannelNotFoundEntity:
        return False
    finally:
        await connection.close()


SCENARIOS: dict[str, Callable[..., Awaitable[Result]]] = {
    "broker_restarts": broker_restarts,
    "service_kills": service_kills,
    "broker_outage": broker_outage,
    "outbox_full": outbox_full,
    "postgres_restart": postgres_restart,
    "poison": poison,
    "graceful_shutdown": graceful_shutdown,
    "webform_kill_mid_drain": webform_kill_mid_drain,
    "queue_deleted": queue_deleted,
}
