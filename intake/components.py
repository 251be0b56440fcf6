"""What a service runs beside its HTTP routes: listeners, tasks, bus consumers and senders.

Each is declared as data on `Service(...)` and run by the service's one `Supervisor`
(intake.supervisor), which restarts it with backoff and jitter, logs each change of state,
sets `intake_component_up{service,component}` and feeds `/readyz`. Component names:

- `listener:<name>`: a non-HTTP server (SMTP, a raw TCP or WebSocket endpoint). Its `open(app)`
  binds and returns a *server*: anything shaped like `asyncio.Server`, with `close()` and
  `await wait_closed()`. The listener is up once `open` returns; it is down when `open` raises
  or the server closes by itself, and is then opened again. On shutdown the kernel calls
  `close()` and waits for `wait_closed()`. `asyncio.start_server(...)` fits as it is; wrap
  another library's server (aiosmtpd's) in a small class with those two methods.
- `task:<name>`: a long-running coroutine `run(app)` (a rules watcher, an async client), up
  while it runs; when it raises or returns it is started again. A blocking client (imaplib,
  an AMI socket) runs in a thread of its own through `run_in_thread`.
- `consumer:<queue>`: a bus queue and its handler, registered with the bus (which supervises
  it under the same supervisor).
- a sender: the channel's outbound transport, run by the kernel as a consumer of
  `intake.outbound.<channel>` (see `SenderHook`).

`critical=False` (a task or listener) keeps a component out of `/readyz`'s verdict: one IMAP
mailbox of several being down does not make the email service unready. It is still listed
with its state, logged and in the gauge.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web
from pydantic import BaseModel

from .supervisor import Ready

# How long a stopping thread task gets to notice its stop event before shutdown goes on.
THREAD_STOP_GRACE_S = 5.0
LISTENER_CLOSE_GRACE_S = 5.0


class Server(Protocol):
    """What a listener's `open` returns: `asyncio.Server`'s two closing methods."""

    def close(self) -> None: ...

    async def wait_closed(self) -> None: ...


@dataclass(frozen=True)
class Listener:
    """A non-HTTP server; see the module docstring for its life."""

    name: str
    open: Callable[[web.Application], Awaitable[Server]]
    critical: bool = True

    @property
    def component(self) -> str:
        return f"listener:{self.name}"

    async def run(self, app: web.Application, ready: Ready) -> None:
        server = await self.open(app)
        try:
            ready()
            # Returns only when the server closed: by itself, or by the `close` below.
            await server.wait_closed()
        finally:
            server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), LISTENER_CLOSE_GRACE_S)


@dataclass(frozen=True)
class Task:
    """A long-running coroutine `run(app)`; see `run_in_thread` for a blocking client."""

    name: str
    run: Callable[[web.Application], Awaitable[None]]
    critical: bool = True

    @property
    def component(self) -> str:
        return f"task:{self.name}"

    async def supervised(self, app: web.Application, ready: Ready) -> None:
        ready()  # a task is up while it runs; it reports trouble by raising
        await self.run(app)


def run_in_thread(work: Callable[[web.Application, threading.Event], None],
                  ) -> Callable[[web.Application], Awaitable[None]]:
    """A `Task.run` for a blocking client: `work(app, stop)` runs in a thread of its own.

    `work` should return soon after `stop` is set (check it between blocking calls with short
    timeouts). A dedicated thread, not the default executor: a client that blocks for hours
    must not take one of the few threads that `asyncio.to_thread` users share.
    """

    async def run(app: web.Application) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        stop = threading.Event()

        def settle(error: BaseException | None) -> None:
            if done.done():
                return
            if error is None:
                done.set_result(None)
            else:
                done.set_exception(error)

        def target() -> None:
            error: BaseException | None = None
            try:
                work(app, stop)
            except BaseException as exc:  # handed to the loop, which re-raises it there
                error = exc
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                loop.call_soon_threadsafe(settle, error)

        thread = threading.Thread(target=target, name=f"intake-task-{work.__name__}",
                                  daemon=True)
        thread.start()
        try:
            await asyncio.shield(done)
        except asyncio.CancelledError:
            stop.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(done), THREAD_STOP_GRACE_S)
            raise

    run.__name__ = getattr(work, "__name__", "thread")
    return run


@dataclass(frozen=True)
class Consumer:
    """A bus queue and its handler; `handler(app)` builds the handler once resources are up.

    `batch=True` hands the handler lists (`Bus.consume_batches`, with `max_batch`,
    `max_wait_s`, `pipeline`); otherwise one model at a time (`Bus.consume`). `binding`
    (exchange, key) declares and binds a queue beyond the core topology.
    """

    queue: str
    model: type[BaseModel]
    handler: Callable[[web.Application], Any]
    batch: bool = False
    max_batch: int = 100
    max_wait_s: float = 0.002
    prefetch: int | None = None
    pipeline: int = 1
    binding: tuple[str, str] | None = None

    @property
    def component(self) -> str:
        return f"consumer:{self.queue}"

    def register(self, app: web.Application, bus: Any) -> None:
        handler = self.handler(app)
        if self.batch:
            bus.consume_batches(self.queue, handler, self.model, max_batch=self.max_batch,
                                max_wait_s=self.max_wait_s, prefetch=self.prefetch,
                                pipeline=self.pipeline, binding=self.binding)
        else:
            bus.consume(self.queue, handler, self.model, prefetch=self.prefetch,
                        binding=self.binding)


class SenderHook(Protocol):
    """A running sender: `start()` opens it and registers its outbound consumer on the bus.

    The kernel's `SenderRunner` (intake/sending.py) has this shape; a `Service` is handed
    factories `sender(app) -> SenderHook`, called once the bus is up.
    """

    async def start(self) -> None: ...

    async def close(self) -> None: ...


SenderFactory = Callable[[web.Application], SenderHook]


__all__ = ["Consumer", "Listener", "SenderFactory", "SenderHook", "Server", "Task",
           "run_in_thread"]
