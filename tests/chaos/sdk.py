"""SDK socket clients as the chaos load: the same accounting as the web form's (tests/chaos).

`SdkSocketLoadDriver` plays the apps: verified users (HMAC-signed with the example config's
test secret), each on a WebSocket of its own, as the JS SDK and `intake_sdk` behave: a chat
message is kept with its `client_msg_id` until its `ack`, and every unacked one is sent again,
in order, on the next socket after a reconnect (the connector killed, a broker link dropped).
Only an `ack` counts as accepted; each message opens a chat ticket of its own (no
`ticket_id`) and its text carries the run's content marker, so `check` counts it as it counts
a form submission. The scenario: the connector SIGKILLed and started again, then every broker
connection closed by the broker (`rabbitmqctl close_all_connections`), mid-stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import random
import re
import time
from collections import Counter
from typing import Any

import aiohttp

from .harness import SERVICES, LoadDriver, Submission
from .scenarios import Lab, Result, _background, scenario

SERVICE = "sdk"
APP, NAMESPACE = "demo-app", "demo-shop"  # the example config's app and its namespace
SECRET = b"demo-app-identity-secret-for-tests-only-7f3a9c"  # its published test value
ACCEPTED, REFUSED, NO_SOCKET = 200, 429, 0  # how an attempt is counted in `statuses`


class SdkSocketLoadDriver(LoadDriver):
    """Chat messages over `users` sockets; message i is user `i % users`'s."""

    def __init__(self, *args: Any, users: int = 20, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.users = users
        self.reconnects: Counter[str] = Counter()  # why sockets were opened again
        self.clients: list[SocketClient] = []

    def user_id(self, index: int) -> str:
        return f"chaos-{index % self.users}"

    def message_key(self, header_key: str) -> str:
        # sdk:<app>:user:<namespace>:<user id>:<client_msg_id>; the check's pattern
        # (`<run>-%`) matches every user's.
        if header_key.endswith("%"):
            return f"sdk:{APP}:user:{NAMESPACE}:%:{header_key}"
        index = int(header_key.rsplit("-", 1)[1])
        return f"sdk:{APP}:user:{NAMESPACE}:{self.user_id(index)}:{header_key}"

    async def run(self, http: aiohttp.ClientSession) -> None:
        base = self.gateway[SERVICE].base
        self.clients = [SocketClient(self, http, base, self.user_id(u))
                        for u in range(self.users)]
        tasks = [asyncio.create_task(c.keep_connected()) for c in self.clients]
        began = time.monotonic()
        try:
            for index in range(self.count):
                if self.rate:
                    await asyncio.sleep(max(0.0, began + index / self.rate - time.monotonic()))
                await self.paused.wait()
                key = self.header_key(index)
                self.submissions[key] = Submission(key=key, started=time.time())
                self.sent += 1
                await self.clients[index % self.users].send(key, {
                    "type": "message", "client_msg_id": key,
                    "text": f"chaos submission {index} of run {self.run_id}"})
            deadline = time.monotonic() + self.give_up_s
            while any(c.unacked for c in self.clients) and time.monotonic() < deadline:
                self._progress.clear()  # set by each ack
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._progress.wait(), 1.0)
        finally:
            for client in self.clients:
                client.stopped = True
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.done.set()
            self._progress.set()

    def acked(self, key: str) -> None:
        sub = self.submissions[key]
        if sub.accepted_at is None:
            sub.accepted_at = time.time()
            sub.statuses.append(ACCEPTED)
            self.statuses[ACCEPTED] += 1
            self.accepted_count += 1
            self._progress.set()


class SocketClient:
    """One user's socket, reopened whenever it closes; unacked messages sent again on it."""

    def __init__(self, driver: SdkSocketLoadDriver, http: aiohttp.ClientSession, base: str,
                 user: str) -> None:
        self.driver = driver
        self.http = http
        self.base = f"{base}/sdk/v1/apps/{APP}"
        self.user = user
        self.unacked: dict[str, dict[str, Any]] = {}  # client_msg_id → frame, in sending order
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.token: str | None = None
        self.stopped = False

    async def send(self, key: str, frame: dict[str, Any]) -> None:
        self.unacked[key] = frame
        await self._try_send(frame)

    async def _try_send(self, frame: dict[str, Any]) -> None:
        ws = self.ws
        if ws is None or ws.closed:
            return  # sent on the next socket
        self.driver.submissions[frame["client_msg_id"]].attempts += 1
        with contextlib.suppress(ConnectionError, RuntimeError, aiohttp.ClientError):
            await ws.send_json(frame)

    async def _session(self) -> str:
        user_hash = hmac.new(SECRET, self.user.encode(), hashlib.sha256).hexdigest()
        async with self.http.post(f"{self.base}/sessions", json={
                "user": {"id": self.user}, "user_hash": user_hash},
                timeout=aiohttp.ClientTimeout(total=10)) as response:
            body = await response.json(content_type=None)
            if response.status != 201:
                raise ConnectionError(f"session: {response.status} {body}")
            return str(body["session_token"])

    async def keep_connected(self) -> None:
        pause = 0.05
        while not self.stopped:
            try:
                if self.token is None:
                    self.token = await self._session()
                await self._connected()
                pause = 0.05
            except (aiohttp.ClientError, OSError, TimeoutError, ConnectionError) as exc:
                self.driver.errors[exc.__class__.__name__] += 1
            self.ws = None
            await asyncio.sleep(pause + random.random() * pause)
            pause = min(pause * 2, 1.0)

    async def _connected(self) -> None:
        async with self.http.ws_connect(f"{self.base}/ws", heartbeat=5.0) as ws:
            await ws.send_json({"type": "hello", "session_token": self.token})
            async for message in ws:
                if message.type != aiohttp.WSMsgType.TEXT:
                    break
                frame = message.json()
                kind = frame.get("type")
                if kind == "synced":
                    self.ws = ws
                    for pending in list(self.unacked.values()):  # in sending order
                        await self._try_send(pending)
                elif kind == "ack":
                    key = frame["client_msg_id"]
                    if self.unacked.pop(key, None) is not None:
                        self.driver.acked(key)
                elif kind == "error" and frame.get("client_msg_id") in self.unacked:
                    self._refused(frame)
            self.ws = None
            self.driver.reconnects[f"closed {ws.close_code}"] += 1
            if ws.close_code == 4401:  # the session is gone: sign in again
                self.token = None

    def _refused(self, frame: dict[str, Any]) -> None:
        """A refusal (rate_limited, unavailable): the message is sent again after the wait."""
        key = frame["client_msg_id"]
        self.driver.statuses[REFUSED] += 1
        self.driver.submissions[key].statuses.append(REFUSED)
        self.driver.errors[f"error {frame.get('code')}"] += 1
        delay = frame.get("retry_after_ms", 200) / 1000

        async def again() -> None:
            await asyncio.sleep(delay)
            if key in self.unacked:
                await self._try_send(self.unacked[key])
        _background(again())


async def sdk_socket_faults(lab: Lab, count: int, *, users: int = 20,
                            down_s: float = 1.0) -> Result:
    """Socket clients while the SDK connector is SIGKILLed and its broker link is dropped:
    every message acked is stored once."""
    async with scenario(lab, "sdk_socket_faults", services=(*SERVICES, SERVICE)) as run:
        driver = SdkSocketLoadDriver(run.gateway, run.run_id, count, rate=lab.rate,
                                     users=users)
        load = _background(driver.run(run.http))
        await driver.reached(1 / 3)
        run.gateway[SERVICE].kill()
        run.fault("sdk connector kill -9")
        await asyncio.sleep(down_s)
        run.gateway[SERVICE].start()
        await run.gateway[SERVICE].wait_healthy(run.http)
        run.fault("sdk connector back")
        await driver.reached(2 / 3)
        closed = await asyncio.to_thread(
            lab.rabbit.ctl, "close_all_connections", "-p", "/", "chaos: link dropped")
        found = re.search(r"Closed (\d+) connections", closed.stdout)  # rabbitmqctl's summary
        run.notes["broker_connections_closed"] = int(found.group(1)) if found else 0
        run.fault(f"broker closed {run.notes['broker_connections_closed']} connections")
        await load
        run.notes["socket_closes"] = dict(driver.reconnects)
        run.notes["client_errors"] = dict(driver.errors)
        result = await run.finish(driver, "SDK sockets: connector killed, broker link dropped")
        if closed.returncode != 0 or not run.notes["broker_connections_closed"]:
            result.problems.append(f"close_all_connections closed nothing: {closed.stdout} "
                                   f"{closed.stderr}".strip())
        return result


SDK_SCENARIOS = {"sdk_socket_faults": sdk_socket_faults}
