"""The SDK's socket: chat over WebSocket and agent replies pushed back, and idle sockets held.

`sdk-socket`: verified users (HMAC, the example config's test secret), one socket each.
1. send → ack at 50/s, open loop (each send timed from its scheduled start), then the most the
   sockets take: every socket with one message in flight (the connector handles a socket's
   frames in order), acks per second. Every acked message must be stored once.
2. reply → push: agent replies posted to the ticket core (`POST /api/v1/tickets/{id}/replies`)
   at 50/s, each timed from its POST to its `message.created` frame on the user's socket; then
   as many as the gateway takes (32 in flight), pushes per second. Every reply pushed once.

`sdk-idle`: 10,000 sockets (10 per user, the example's cap) opened and left idle: the SDK
process's memory and open files per socket, then a ping on every socket at once (ping → pong).

Both are off the default run (`make bench SCENARIO=sdk-socket,sdk-idle`, or `SCENARIO=sdk`
with the REST scenarios of sdk.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import os
import time
from typing import Any

import aiohttp
import orjson
from sqlalchemy import select

from bench.check import check_exactly_once, read_persisted, wait_stored
from bench.gateway import read_rss_mb
from bench.result import Context, Result, Scenario
from bench.stats import summarize
from ticket_core.db import Message as MessageRow

SECRET = b"demo-app-identity-secret-for-tests-only-7f3a9c"  # the example config's test value
APP, NAMESPACE = "demo-app", "demo-shop"
STEADY_RATE = 50.0
IN_FLIGHT = 32


class UserSocket:
    """One user's socket: acks and pushed replies land in futures keyed by what was sent."""

    def __init__(self, user: str, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.user = user
        self.ws = ws
        self.acks: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.pushes: dict[str, asyncio.Future[float]] = {}  # reply text → arrival time
        self.pongs: asyncio.Queue[float] = asyncio.Queue()
        self.pushed: list[str] = []
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self.ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            frame = orjson.loads(message.data)
            kind = frame.get("type")
            if kind == "ack":
                future = self.acks.pop(frame["client_msg_id"], None)
                if future is not None and not future.done():
                    future.set_result(frame)
            elif kind == "message.created":
                text = frame["message"]["text"]
                self.pushed.append(text)
                found = self.pushes.get(text)
                if found is not None and not found.done():
                    found.set_result(time.perf_counter())
            elif kind == "pong":
                self.pongs.put_nowait(time.perf_counter())
            elif kind == "error" and frame.get("client_msg_id") in self.acks:
                self.acks.pop(frame["client_msg_id"]).set_exception(
                    RuntimeError(f"refused: {frame}"))

    async def send(self, client_msg_id: str, text: str) -> dict[str, Any]:
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.acks[client_msg_id] = future
        await self.ws.send_str(orjson.dumps({"type": "message", "client_msg_id": client_msg_id,
                                             "text": text}).decode())
        return await asyncio.wait_for(future, 30)

    async def close(self) -> None:
        await self.ws.close()
        self.reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.reader


async def open_session(http: aiohttp.ClientSession, base: str, user: str) -> str:
    user_hash = hmac.new(SECRET, user.encode(), hashlib.sha256).hexdigest()
    async with http.post(f"{base}/sessions", json={"user": {"id": user},
                                                   "user_hash": user_hash}) as response:
        body = await response.json()
        if response.status != 201:
            raise RuntimeError(f"session for {user}: {response.status} {body}")
        return str(body["session_token"])


async def connect(http: aiohttp.ClientSession, base: str, user: str,
                  token: str) -> UserSocket:
    ws = await http.ws_connect(f"{base}/ws", autoping=True, max_msg_size=0)
    await ws.send_str(orjson.dumps({"type": "hello", "session_token": token}).decode())
    while True:  # welcome, then synced
        frame = orjson.loads((await asyncio.wait_for(ws.receive(), 30)).data)
        if frame.get("type") == "synced":
            return UserSocket(user, ws)


async def bounded(tasks: list[Any], limit: int) -> list[Any]:
    """Await coroutine factories with at most `limit` running."""
    gate = asyncio.Semaphore(limit)

    async def one(factory: Any) -> Any:
        async with gate:
            return await factory()
    return await asyncio.gather(*(one(t) for t in tasks))


class SdkSocket(Scenario):
    name = "sdk-socket"
    order = 172
    default = False

    async def run(self, ctx: Context) -> list[Result]:
        quick = ctx.options.quick
        tag = ctx.run_id[-8:] + "w"
        users = [f"ws-{tag}-{u}" for u in range(10 if quick else IN_FLIGHT)]
        base = f"{ctx.gateway.url('sdk')}/sdk/v1/apps/{APP}"
        prefix = f"sdk:{APP}:user:{NAMESPACE}:ws-{tag}-"
        http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        sockets: list[UserSocket] = []
        try:
            tokens = await bounded([lambda u=u: open_session(http, base, u) for u in users], 16)
            sockets = list(await bounded([lambda u=u, t=t: connect(http, base, u, t)
                                          for u, t in zip(users, tokens, strict=True)], 16))
            results = await self._chat(ctx, sockets, prefix, quick)
            results += await self._replies(ctx, sockets, prefix, quick)
            return results
        finally:
            for socket in sockets:
                await socket.close()
            await http.close()

    async def _chat(self, ctx: Context, sockets: list[UserSocket], prefix: str,
                    quick: bool) -> list[Result]:
        acked: list[str] = []
        failed: list[str] = []

        async def send(socket: UserSocket, key: str, started: float) -> float | None:
            stored_as = f"sdk:{APP}:user:{NAMESPACE}:{socket.user}:{key}"
            try:
                await socket.send(key, f"压测聊天 {key}：我的快递还没到")
            except (RuntimeError, TimeoutError, ConnectionError):
                failed.append(stored_as)
                return None
            acked.append(stored_as)
            return (time.perf_counter() - started) * 1000

        # 1. open loop at 50/s: each send timed from its scheduled start.
        n_open = ctx.open_n(STEADY_RATE)
        ctx.log(f"sdk-socket: {n_open} chat messages at {STEADY_RATE:g}/s over "
                f"{len(sockets)} sockets")
        began = time.perf_counter()
        tasks = []
        for i in range(n_open):
            due = began + i / STEADY_RATE
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            tasks.append(asyncio.create_task(send(sockets[i % len(sockets)], f"o{i}", due)))
        open_ms = [ms for ms in await asyncio.gather(*tasks) if ms is not None]

        # 2. closed loop: one message in flight per socket.
        n_closed = ctx.n(3000, 100)
        ctx.rss.reset()
        began = time.perf_counter()

        async def closed(socket: UserSocket, index: int) -> list[float]:
            times = []
            for i in range(index, n_closed, len(sockets)):
                ms = await send(socket, f"c{i}", time.perf_counter())
                if ms is not None:
                    times.append(ms)
            return times
        closed_ms = [ms for part in await asyncio.gather(
            *(closed(s, k) for k, s in enumerate(sockets))) for ms in part]
        elapsed = time.perf_counter() - began
        throughput = round(len(closed_ms) / elapsed, 1)
        cpu = ctx.rss.cpu_ms_per_message(len(closed_ms))

        await wait_stored(ctx.engine, prefix, len(acked), stall_s=ctx.options.stall_s)
        stored = [p.key for p in await read_persisted(ctx.engine, prefix)]
        check = check_exactly_once(acked, failed, stored)
        ctx.log(f"sdk-socket: send → ack p50 {summarize(open_ms)['p50']} ms, "
                f"p99 {summarize(open_ms)['p99']} ms at {STEADY_RATE:g}/s; "
                f"{throughput}/s acked with {len(sockets)} in flight; {check.describe()}")
        common = {"check": check.as_dict(), "ok": check.ok,
                  "failure": None if check.ok else check.describe()}
        return [
            Result(scenario="sdk-socket-ack", messages=n_open, load=f"{STEADY_RATE:g}/s",
                   throughput=None, latency=summarize(open_ms),
                   extra={"measured": "send → ack (durable), from the scheduled start"},
                   **common),
            Result(scenario="sdk-socket-ack-max", messages=n_closed,
                   load=f"{len(sockets)} sockets, 1 in flight each", throughput=throughput,
                   ratio=ctx.ratio(throughput), latency=summarize(closed_ms),
                   rss_mb=ctx.rss.peaks(),
                   extra={"measured": "send → ack; throughput = acks per second",
                          "cpu_ms_per_message": cpu}, **common)]

    async def _replies(self, ctx: Context, sockets: list[UserSocket], prefix: str,
                       quick: bool) -> list[Result]:
        # Each user's ticket in the ticket core: the one its first chat message opened.
        async with ctx.engine.connect() as connection:
            rows = (await connection.execute(
                select(MessageRow.idempotency_key, MessageRow.ticket_id)
                .where(MessageRow.idempotency_key.startswith(prefix, autoescape=True)))).all()
        ticket_of = {key.rsplit(":", 1)[0].rsplit(":", 1)[1]: ticket for key, ticket in rows}
        targets = [(s, ticket_of[s.user]) for s in sockets]
        core = ctx.client("ticket-core")
        headers = {"Authorization": f"Bearer {ctx.gateway.token}",
                   "Content-Type": "application/json"}

        async def reply(index: int, started: float) -> float | None:
            socket, ticket = targets[index % len(targets)]
            text = f"您好，已为您退款 r{index}-{ctx.run_id}"
            arrived: asyncio.Future[float] = asyncio.get_running_loop().create_future()
            socket.pushes[text] = arrived
            status, _ = await core.post(f"/api/v1/tickets/{ticket}/replies",
                                        orjson.dumps({"text": text}), headers)
            if status != 201:
                return None
            try:
                return (await asyncio.wait_for(arrived, 30) - started) * 1000
            except TimeoutError:
                return None

        n_steady = ctx.open_n(STEADY_RATE)
        began = time.perf_counter()
        tasks = []
        for i in range(n_steady):
            due = began + i / STEADY_RATE
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            tasks.append(asyncio.create_task(reply(i, due)))
        steady_ms = [ms for ms in await asyncio.gather(*tasks) if ms is not None]

        n_max = ctx.n(1000, 60)
        ctx.rss.reset()
        began = time.perf_counter()
        max_ms = [ms for ms in await bounded(
            [lambda i=i: reply(n_steady + i, time.perf_counter()) for i in range(n_max)],
            IN_FLIGHT) if ms is not None]
        elapsed = time.perf_counter() - began
        throughput = round(len(max_ms) / elapsed, 1)
        cpu = ctx.rss.cpu_ms_per_message(len(max_ms))
        pushed = [t for s in sockets for t in s.pushed if t.endswith(f"-{ctx.run_id}")]
        doubled = len(pushed) - len(set(pushed))
        missing = n_steady + n_max - len(steady_ms) - len(max_ms)
        ok = doubled == 0 and missing == 0
        check = {"ok": ok, "sent": n_steady + n_max, "pushed": len(set(pushed)),
                 "missing": missing, "doubled": doubled}
        ctx.log(f"sdk-socket: reply → push p50 {summarize(steady_ms)['p50']} ms, p99 "
                f"{summarize(steady_ms)['p99']} ms at {STEADY_RATE:g}/s; {throughput} "
                f"replies/s pushed with {IN_FLIGHT} in flight; {missing} missing, "
                f"{doubled} doubled")
        failure = None if ok else f"{missing} replies not pushed, {doubled} pushed twice"
        return [
            Result(scenario="sdk-reply-push", messages=n_steady, load=f"{STEADY_RATE:g}/s",
                   throughput=None, latency=summarize(steady_ms), check=check, ok=ok,
                   failure=failure,
                   extra={"measured": "POST /replies → message.created on the socket"}),
            Result(scenario="sdk-reply-push-max", messages=n_max, load=f"{IN_FLIGHT} in flight",
                   throughput=throughput, ratio=ctx.ratio(throughput),
                   latency=summarize(max_ms), check=check, ok=ok, failure=failure,
                   rss_mb=ctx.rss.peaks(),
                   extra={"measured": "POST /replies → message.created; throughput = pushes "
                                      "per second", "cpu_ms_per_message": cpu})]


class SdkIdle(Scenario):
    name = "sdk-idle"
    order = 174
    default = False

    async def run(self, ctx: Context) -> list[Result]:
        count = ctx.n(10_000, 200)
        per_user = 10  # the example config's sockets_per_user
        tag = ctx.run_id[-8:] + "i"
        users = [f"idle-{tag}-{u}" for u in range((count + per_user - 1) // per_user)]
        base = f"{ctx.gateway.url('sdk')}/sdk/v1/apps/{APP}"
        pid = ctx.gateway.pids()["sdk"]
        rss_before, fds_before = read_rss_mb(pid) or 0.0, len(os.listdir(f"/proc/{pid}/fd"))
        http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        sockets: list[UserSocket] = []
        try:
            ctx.log(f"sdk-idle: {len(users)} sessions, {count} sockets")
            tokens = await bounded([lambda u=u: open_session(http, base, u) for u in users], 32)
            began = time.perf_counter()
            sockets = list(await bounded(
                [lambda i=i: connect(http, base, users[i // per_user], tokens[i // per_user])
                 for i in range(count)], 200))
            opened_s = time.perf_counter() - began
            await asyncio.sleep(3.0)  # idle: nothing but heartbeats
            rss_after = read_rss_mb(pid) or 0.0
            fds_after = len(os.listdir(f"/proc/{pid}/fd"))

            ping = orjson.dumps({"type": "ping"}).decode()
            began = time.perf_counter()
            await asyncio.gather(*(s.ws.send_str(ping) for s in sockets))
            sent_all_ms = (time.perf_counter() - began) * 1000  # the client's own share
            pongs = await asyncio.gather(*(asyncio.wait_for(s.pongs.get(), 60)
                                           for s in sockets), return_exceptions=True)
            burst_ms = [(p - began) * 1000 for p in pongs if isinstance(p, float)]
            missing = count - len(burst_ms)
        finally:
            for socket in sockets:
                await socket.close()
            await http.close()
        per_socket_kb = round((rss_after - rss_before) * 1024 / count, 1)
        summary = summarize(burst_ms)
        ctx.log(f"sdk-idle: {count} sockets open in {opened_s:.1f} s; "
                f"{per_socket_kb} KB and {(fds_after - fds_before) / count:.2f} fds per socket; "
                f"ping burst p99 {summary['p99']} ms (the last ping left the client after "
                f"{sent_all_ms:.0f} ms), {missing} pongs missing")
        return [Result(
            scenario=self.name, messages=count, load=f"{count} idle sockets",
            throughput=None, latency=summary, ok=missing == 0,
            failure=f"{missing} pongs missing" if missing else None,
            check={"ok": missing == 0, "sockets": count, "pongs": len(burst_ms)},
            rss_mb={"sdk": round(rss_after, 1)},
            extra={"measured": "ping → pong, every socket pinged at once",
                   "kb_per_socket": per_socket_kb,
                   "fds_per_socket": round((fds_after - fds_before) / count, 3),
                   "rss_mb_before": round(rss_before, 1), "rss_mb_after": round(rss_after, 1),
                   "open_s": round(opened_s, 1),
                   "pings_sent_after_ms": round(sent_all_ms, 1)})]


SCENARIOS = [SdkSocket(), SdkIdle()]
