"""The service skeleton: health, readiness, metrics, logs and graceful shutdown, composed.

A service is declared, never subclassed: `Service(name, port, settings, routes=…,
listeners=…, tasks=…, consumers=…, senders=…, ready_checks=…, contexts=…, state=…)`.
`contexts` are aiohttp cleanup contexts for resources (database, bus, blob store), started in
order and stopped in reverse; listeners, tasks, consumers and senders (intake/components.py)
start once every resource is up and run under the service's one `Supervisor`, whose states
`/readyz` reports. `serve` runs one or several services in one event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import gc
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from pydantic_settings import BaseSettings

from .blobs import BlobStore, blob_store_for
from .bus import BROKER_COMPONENT, Bus
from .components import Consumer, Listener, SenderFactory, SenderHook, Task
from .config import ConfigDocument
from .errors import BodyTimedOut
from .http import error_answer
from .logging import get_logger
from .outbox import Publisher
from .outbox_files import orphan_drain, own_outbox
from .settings import IntakeSettings
from .supervisor import Ready, Supervisor

SETTINGS = web.AppKey("settings", IntakeSettings)
CONFIG = web.AppKey("config", ConfigDocument)
SERVICE_NAME = web.AppKey("service_name", str)
SERVICE_SETTINGS = web.AppKey("service_settings", BaseSettings)
ACCOUNTS = web.AppKey("accounts", BaseModel)
BUS = web.AppKey("bus", Bus)
PUBLISHER = web.AppKey("publisher", Publisher)
BLOBS = web.AppKey("blobs", BlobStore)
SUPERVISOR = web.AppKey("supervisor", Supervisor)
SENDERS = web.AppKey("senders", list)

CleanupContext = Callable[[web.Application], AsyncIterator[None]]
ReadyCheck = Callable[[web.Application], Awaitable[str | None]]


@dataclass
class Service:
    """One process part: HTTP routes, resources, and the components its supervisor runs.

    `consumers` and `senders` need a bus: put `bus_context` (or `connector_bus_context`) in
    `contexts`. Health, readiness and metrics endpoints come with every service.
    """

    name: str
    port: int
    settings: IntakeSettings
    routes: Sequence[web.AbstractRouteDef] = ()
    listeners: Sequence[Listener] = ()
    tasks: Sequence[Task] = ()
    consumers: Sequence[Consumer] = ()
    senders: Sequence[SenderFactory] = ()
    contexts: Sequence[CleanupContext] = ()
    ready_checks: Sequence[ReadyCheck] = ()
    middlewares: Sequence[Any] = ()
    state: dict[web.AppKey[Any], Any] = field(default_factory=dict)
    # Run when shutdown begins, before in-flight handlers are awaited: a service with
    # long-lived connections (the SDK's sockets) closes them here, or shutdown waits for them.
    shutdown_hooks: Sequence[Callable[[web.Application], Awaitable[None]]] = ()
    host: str | None = None
    client_max_size: int = 1024**2

    def build_app(self) -> web.Application:
        middlewares = [body_deadline(self.settings.http_read_timeout_s), *self.middlewares]
        app = web.Application(middlewares=middlewares, client_max_size=self.client_max_size)
        app[SERVICE_NAME] = self.name
        app[SETTINGS] = self.settings
        app[SUPERVISOR] = Supervisor(self.name)
        for key, value in self.state.items():
            app[key] = value
        app.router.add_get("/healthz", _healthz)
        app.router.add_get("/readyz", _make_readyz(list(self.ready_checks)))
        app.router.add_get("/metrics", _metrics)
        app.router.add_routes(list(self.routes))
        app.on_shutdown.extend(self.shutdown_hooks)
        # The supervisor is stopped last (its context is the outermost), the components first.
        app.cleanup_ctx.append(_outermost_context)
        app.cleanup_ctx.extend(self.contexts)
        app.cleanup_ctx.append(self._components_context)
        return app

    async def _components_context(self, app: web.Application) -> AsyncIterator[None]:
        """Start consumers, senders, listeners and tasks once every resource is up."""
        supervisor = app[SUPERVISOR]
        if (self.consumers or self.senders) and BUS not in app:
            raise RuntimeError(f"service {self.name!r} has consumers or senders but no bus: "
                               "add bus_context (or connector_bus_context) to its contexts")
        for consumer in self.consumers:
            consumer.register(app, app[BUS])
        for make_sender in self.senders:
            sender = make_sender(app)
            await sender.start()
            # Closed by the outermost context, once the bus stopped delivering to it.
            app[SENDERS].append(sender)
        for listener in self.listeners:
            supervisor.start(listener.component, _bind(listener.run, app),
                             critical=listener.critical)
        for task in self.tasks:
            supervisor.start(task.component, _bind(task.supervised, app),
                             critical=task.critical)
        try:
            yield
        finally:
            # Edges first: listeners and tasks stop taking work before the resources go.
            for name in [*(t.component for t in reversed(self.tasks)),
                         *(li.component for li in reversed(self.listeners))]:
                await supervisor.remove(name)


def _bind(run: Callable[[web.Application, Ready], Awaitable[None]],
          app: web.Application) -> Callable[[Ready], Awaitable[None]]:
    """A component's `run(app, ready)` as the supervisor's `run(ready)`."""

    async def supervised(ready: Ready) -> None:
        await run(app, ready)

    return supervised


async def _outermost_context(app: web.Application) -> AsyncIterator[None]:
    """Stops what must outlive every resource: senders (after the bus), the supervisor."""
    app[SENDERS] = []
    try:
        yield
    finally:
        senders: list[SenderHook] = app[SENDERS]
        for sender in reversed(senders):
            await sender.close()
        await app[SUPERVISOR].stop()


class BodyReadTimeout(Exception):
    """The client did not send its whole body in time (raised inside the handler's reads).

    Not an IntakeError: it must pass through a handler's own error mapping untouched, up to
    the middleware that answers it (408, as `BodyTimedOut`).
    """


def body_deadline(timeout_s: float) -> Middleware:
    """Middleware: a body not fully received `timeout_s` after the head ends the request (408).

    The head itself is bounded by aiohttp's keep-alive timer, which `serve` sets to the same
    value: in aiohttp 3.14 it runs from the connection's start and is not reset by partial data.
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        content = request.content
        if not request.body_exists or content.is_eof():
            return await handler(request)

        def expire() -> None:
            if not content.is_eof() and content.exception() is None:
                content.set_exception(BodyReadTimeout())

        timer = asyncio.get_running_loop().call_later(timeout_s, expire)
        try:
            return await handler(request)
        except BodyReadTimeout:
            # The route's pattern, not the path: a path may hold a secret (`/csat/{token}`).
            resource = request.match_info.route.resource
            get_logger(service=request.app[SERVICE_NAME]).info(
                "request_body_timed_out", peer=request.remote,
                path=resource.canonical if resource is not None else "unmatched")
            response = error_answer(BodyTimedOut(
                f"The request body did not arrive within {timeout_s:g} s."))
            response.force_close()
            return response
        finally:
            timer.cancel()

    return middleware


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "service": request.app[SERVICE_NAME]})


def _make_readyz(checks: list[ReadyCheck]) -> Callable[[web.Request], Awaitable[web.Response]]:
    """503 when a check or a critical component (consumer, listener, task) has a problem.

    The body names each problem and lists every supervised component with its state, the
    non-critical ones included.
    """

    async def readyz(request: web.Request) -> web.Response:
        supervisor = request.app[SUPERVISOR]
        problems: dict[str, str] = dict(supervisor.problems())
        details: dict[str, Any] = {"components": {
            name: {"state": state.state, "critical": state.critical, "error": state.error,
                   "degraded": state.degraded, "restarts": state.restarts}
            for name, state in sorted(supervisor.states().items())}}
        for check in checks:
            try:
                outcome = await asyncio.wait_for(check(request.app), timeout=5)
            except Exception as exc:
                outcome = f"check failed: {exc!r}"
            if isinstance(outcome, dict):
                details.update(outcome)
            elif outcome:
                problems[getattr(check, "__name__", "check")] = outcome
        status = 503 if problems else 200
        body = {"status": "unready" if problems else "ready",
                "service": request.app[SERVICE_NAME], "problems": problems, **details}
        return web.json_response(body, status=status)

    return readyz


async def _metrics(request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


# -- reusable resources ---------------------------------------------------------------------


async def bus_context(app: web.Application) -> AsyncIterator[None]:
    """Connects in the background (a service starts even while the broker is down)."""
    async with _running_bus(app, 0.0):
        yield


async def connector_bus_context(app: web.Application) -> AsyncIterator[None]:
    """A connector's bus: its writes are held briefly to go out together (see the setting).

    The broker connection is not critical to a connector's readiness: its outbox accepts
    durably while the broker is away (`outbox_ready` reports both). Its consumers (a sender's
    outbound queue) stay critical.
    """
    async with _running_bus(app, app[SETTINGS].connector_write_window_ms / 1000):
        broker = app[SUPERVISOR].states().get(BROKER_COMPONENT)
        if broker is not None:
            broker.critical = False
        yield


@contextlib.asynccontextmanager
async def _running_bus(app: web.Application, write_window_s: float) -> AsyncIterator[None]:
    # The service's supervisor: the broker and every consumer are its components.
    bus = Bus(app[SETTINGS], app[SERVICE_NAME], write_window_s=write_window_s,
              supervisor=app[SUPERVISOR])
    app[BUS] = bus
    bus.start()
    try:
        yield
    finally:
        await bus.close()


async def blobs_context(app: web.Application) -> AsyncIterator[None]:
    blobs = blob_store_for(app[SETTINGS])
    app[BLOBS] = blobs
    yield
    await blobs.close()


# At SIGTERM, what is left in the outbox is drained for at most this long (within the 30 s
# shutdown timeout, itself within the grace periods of deploy/).
DRAIN_AT_STOP_S = 10.0


async def publisher_context(app: web.Application) -> AsyncIterator[None]:
    """This instance's outbox (locked), its drain task, and the drain of the outboxes of
    this service that no running instance holds; needs `bus_context` before it."""
    settings, service, bus = app[SETTINGS], app[SERVICE_NAME], app[BUS]
    with own_outbox(settings.data_dir, service, settings.instance) as outbox:
        publisher = Publisher(bus, outbox, service, channel=service)
        app[PUBLISHER] = publisher
        bus.on_connected.append(_wake(publisher))
        publisher.start()
        async with orphan_drain(bus, settings.data_dir, service, outbox.path):
            yield
        await publisher.stop(drain_within_s=DRAIN_AT_STOP_S)


def _wake(publisher: Publisher) -> Callable[[], Awaitable[None]]:
    async def wake() -> None:
        publisher._wake.set()

    return wake


async def broker_ready(app: web.Application) -> str | None:
    """The broker connection and every consumer: one down (or holding messages) is named."""
    bus = app[BUS]
    problems = bus.problems()
    if not bus.connected:
        problems.setdefault("broker", "broker unreachable")
    return "; ".join(f"{name}: {reason}" for name, reason in sorted(problems.items())) or None


async def outbox_ready(app: web.Application) -> Any:
    """A connector with a writable outbox still accepts durably while the broker is away.

    Unready only when its drain is stuck although the broker is there (a full disk, say).
    """
    publisher = app[PUBLISHER]
    details: dict[str, Any] = {"broker": "up" if app[BUS].connected else "down",
                               "outbox_depth": publisher.outbox.depth}
    if app[BUS].missing_topology:  # INTAKE_BUS_DECLARE=false; the outbox holds meanwhile
        details["missing_topology"] = app[BUS].missing_topology
    return publisher.problem() or details


# -- running -------------------------------------------------------------------------------


def settle_garbage_collector() -> None:
    """Keep the start-up heap out of every later garbage collection.

    A service holds hundreds of thousands of long-lived objects once its imports, schemas and
    SQL statements are loaded; each full collection walked them all, which cost tens of
    microseconds per message at a thousand messages a second. `gc.freeze` moves them to a
    generation the collector never visits; what the service allocates afterwards is still
    collected. Nearly all of it is freed by reference counting the moment a message is done,
    so the collector (which only matters for reference cycles) runs after 50,000 net new
    objects instead of 700: measured, that took its 15-30 µs per message to nothing, and the
    memory check (`make bench SCENARIO=memory`) shows no growth.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


# How long past the graceful shutdown window a signalled stop may take before the watchdog
# dumps the stacks and exits.
STOP_WATCHDOG_MARGIN_S = 15.0


async def serve(services: Sequence[Service], *, shutdown_timeout: float = 30.0,
                stop: asyncio.Event | None = None,
                started: Callable[[list[tuple[Service, str]]], None] | None = None) -> None:
    """Run services until SIGTERM/SIGINT (or `stop`), then shut down gracefully.

    Shutdown goes in reverse order, so edges stop taking traffic before the consumers
    behind them finish their in-flight work.
    """
    log = get_logger(service="intake")
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()

    def stop_signalled() -> None:
        stop.set()
        # A stop that never ends (a cleanup that hangs, a library's thread the interpreter
        # waits for at exit) must still end the process: past the graceful window every
        # thread's stack goes to stderr and the process exits 1, so the cause is on record.
        faulthandler.dump_traceback_later(shutdown_timeout + STOP_WATCHDOG_MARGIN_S, exit=True)

    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop_signalled)
    runners: list[tuple[Service, web.AppRunner]] = []
    listening: list[tuple[Service, str]] = []
    try:
        for service in services:
            # keepalive_timeout also bounds the wait for a request head (slow-loris clients).
            runner = web.AppRunner(service.build_app(), access_log=None,
                                   handle_signals=False, shutdown_timeout=shutdown_timeout,
                                   keepalive_timeout=service.settings.http_read_timeout_s)
            await runner.setup()
            runners.append((service, runner))
            host = service.host or service.settings.host
            site = web.TCPSite(runner, host, service.port)
            await site.start()
            listening.append((service, f"http://{host}:{service.port}"))
            log.info("service_started", name=service.name, url=f"http://{host}:{service.port}")
        if started:
            started(listening)
        settle_garbage_collector()
        await stop.wait()
    finally:
        began = time.monotonic()
        for service, runner in reversed(runners):
            log.info("service_stopping", name=service.name)
            await runner.cleanup()
        log.info("services_stopped", seconds=round(time.monotonic() - began, 3))
