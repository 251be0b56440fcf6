"""A service's listeners and tasks under its supervisor: real sockets, real coroutines, threads."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import REGISTRY

from intake import Listener, Service, Task, run_in_thread
from intake.settings import IntakeSettings
from tests.support import eventually


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@asynccontextmanager
async def running(name: str, *, listeners: Sequence[Listener] = (),
                  tasks: Sequence[Task] = ()) -> AsyncIterator[TestClient[Any, Any]]:
    service = Service(name=name, port=0, settings=IntakeSettings(), listeners=listeners,
                      tasks=tasks)
    client = TestClient(TestServer(service.build_app()))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


async def readiness(client: TestClient[Any, Any]) -> tuple[int, dict[str, Any]]:
    response = await client.get("/readyz")
    return response.status, await response.json()


def echo_listener(port: int, opened: list[int] | None = None) -> Listener:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()

    async def open_server(app: web.Application) -> asyncio.Server:
        server = await asyncio.start_server(echo, "127.0.0.1", port)
        if opened is not None:
            opened.append(port)
        return server

    return Listener("echo", open_server)


async def echo_once(port: int, line: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(line)
    await writer.drain()
    answer = await reader.readline()
    writer.close()
    return answer


async def test_a_listener_that_cannot_bind_is_named_by_readyz_until_it_comes_up() -> None:
    port = free_port()
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squatter.bind(("127.0.0.1", port))
    squatter.listen()
    async with running("listens", listeners=[echo_listener(port)]) as client:
        async def down() -> bool:
            status, body = await readiness(client)
            return status == 503 and body["problems"].get("listener:echo", "").startswith(
                "down: OSError")

        await eventually(down)
        squatter.close()  # the port is free again: the supervisor's next attempt binds it

        async def up() -> bool:
            status, body = await readiness(client)
            return status == 200 and body["components"]["listener:echo"]["state"] == "up"

        await eventually(up)
        assert await echo_once(port, b"hello\n") == b"hello\n"
        assert REGISTRY.get_sample_value(
            "intake_component_up", {"service": "listens", "component": "listener:echo"}) == 1
    # Stopping the service closed the listener.
    try:
        await echo_once(port, b"again\n")
    except OSError:
        pass
    else:
        raise AssertionError("the listener still answers after the service stopped")


async def test_a_listener_whose_server_closes_is_opened_again() -> None:
    port = free_port()
    opened: list[int] = []
    servers: list[asyncio.Server] = []
    inner = echo_listener(port, opened)

    async def open_and_keep(app: web.Application) -> Any:
        server = await inner.open(app)
        servers.append(server)  # type: ignore[arg-type]  # echo_listener returns asyncio.Server
        return server

    async with running("reopens", listeners=[Listener("echo", open_and_keep)]) as client:
        await eventually(lambda: len(opened) == 1)
        servers[0].close()  # as if the server died under the service
        await eventually(lambda: len(opened) == 2)
        assert await echo_once(port, b"back\n") == b"back\n"
        status, body = await readiness(client)
        assert status == 200 and body["components"]["listener:echo"]["restarts"] >= 1


async def test_a_failing_non_critical_task_leaves_the_service_ready_a_critical_one_does_not(
        ) -> None:
    runs = {"mailbox": 0, "pbx": 0}

    async def mailbox(app: web.Application) -> None:
        runs["mailbox"] += 1
        raise ConnectionRefusedError("imap.example.com:993")

    async def pbx(app: web.Application) -> None:
        runs["pbx"] += 1
        raise ConnectionRefusedError("pbx.example.com:5038")

    async with running("tasks", tasks=[Task("mailbox", mailbox, critical=False)]) as client:
        await eventually(lambda: runs["mailbox"] >= 2)  # restarted after its failure
        status, body = await readiness(client)
        assert status == 200 and body["problems"] == {}
        assert body["components"]["task:mailbox"]["state"] == "down"
        assert "imap.example.com" in body["components"]["task:mailbox"]["error"]

    async with running("tasks2", tasks=[Task("pbx", pbx)]) as client:
        await eventually(lambda: runs["pbx"] >= 1)

        async def named() -> bool:
            status, body = await readiness(client)
            return status == 503 and "pbx.example.com" in body["problems"].get("task:pbx", "")

        await eventually(named)


async def test_a_blocking_client_runs_in_its_own_thread_and_stops_with_the_service() -> None:
    seen: list[str] = []
    stopped = threading.Event()

    def poll_mailbox(app: web.Application, stop: threading.Event) -> None:
        seen.append(threading.current_thread().name)
        while not stop.wait(0.01):  # a blocking client checks its stop event between calls
            pass
        stopped.set()

    async with running("threads", tasks=[Task("imap", run_in_thread(poll_mailbox))]) as client:
        await eventually(lambda: seen)
        status, body = await readiness(client)
        assert status == 200 and body["components"]["task:imap"]["state"] == "up"
        assert seen[0].startswith("intake-task-") and not stopped.is_set()
    assert stopped.is_set()  # the service's shutdown set the stop event and waited


async def test_a_thread_that_raises_is_started_again() -> None:
    attempts: list[int] = []

    def flaky(app: web.Application, stop: threading.Event) -> None:
        attempts.append(1)
        if len(attempts) < 3:
            raise TimeoutError("AMI login timed out")
        stop.wait()

    async with running("flaky", tasks=[Task("ami", run_in_thread(flaky))]) as client:
        await eventually(lambda: len(attempts) == 3, timeout=15)

        async def up() -> bool:
            status, body = await readiness(client)
            return status == 200 and body["components"]["task:ami"]["state"] == "up"

        await eventually(up)
        _, body = await readiness(client)
        assert "AMI login timed out" in body["components"]["task:ami"]["error"]
