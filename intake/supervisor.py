"""Named long-running components, each restarted with backoff when it fails, and their states.

A `Supervisor(service)` runs the parts of one process that must keep running: the broker
connection, each bus consumer, a listener (SMTP, WebSocket), a task (an IMAP mailbox, an AMI
client, a rules watcher). Each is an async callable `run(ready)`:

    async def run_listener(ready: Callable[[], None]) -> None:
        server = await start_server(...)
        ready()                      # the component is up (bound, consuming, connected)
        await server.wait_closed()   # returns or raises when it stops working

    supervisor = Supervisor("email")
    supervisor.start("smtp", run_listener)                  # critical: /readyz depends on it
    supervisor.start("imap:support@example.com", run_imap, critical=False)
    ...
    supervisor.states()    # {"smtp": ComponentState(state="up", error=None, ...), ...}
    supervisor.problems()  # {"smtp": "down: ConnectionRefusedError(...)"}: critical, not up
    await supervisor.stop()

When `run` raises or returns, the supervisor starts it again after a pause that doubles from
`first_delay_s` (0.2 s) up to `max_delay_s` (5 s), with up to half again of random jitter so
that many components do not retry in step; the pause starts over once the component has called
`ready()` again. State changes are logged once each, not per retry: `component_down` (with the
error) when a component leaves `up` or fails before its first `ready()`, `component_up` when it
calls `ready()`. The gauge `intake_component_up{service,component}` is 1 while a component is
up. A component may also report itself unwell while it keeps running (say, a consumer holding
messages while the database is down) with `degrade(name, reason)` and `restore(name)`: it then
counts as a problem without being restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from .logging import get_logger
from .metrics import COMPONENT_UP

Ready = Callable[[], None]
Run = Callable[[Ready], Awaitable[None]]
StateName = Literal["starting", "up", "down"]

FIRST_DELAY_S = 0.2
MAX_DELAY_S = 5.0


@dataclass
class ComponentState:
    """What `states()` answers for one component."""

    state: StateName = "starting"
    critical: bool = True
    error: str | None = None  # the last failure, kept after a recovery for ops to read
    degraded: str | None = None  # set by `degrade` while the component runs but is unwell
    since: float = field(default_factory=time.time)  # when `state` last changed (epoch s)
    restarts: int = 0

    @property
    def healthy(self) -> bool:
        return self.state == "up" and self.degraded is None


@dataclass
class _Component:
    name: str
    run: Run
    status: ComponentState
    task: asyncio.Task[None] | None = None
    up: asyncio.Event = field(default_factory=asyncio.Event)


class Supervisor:
    """Runs named components and restarts each one that fails; see the module docstring."""

    def __init__(self, service: str, *, first_delay_s: float = FIRST_DELAY_S,
                 max_delay_s: float = MAX_DELAY_S) -> None:
        self.service = service
        self.first_delay_s = first_delay_s
        self.max_delay_s = max_delay_s
        self._components: dict[str, _Component] = {}
        self._stopping = False

    @property
    def log(self) -> Any:
        # Bound on use, so that the line is JSON whatever the order of imports and set-up.
        return get_logger(service=self.service, component="supervisor")

    def start(self, name: str, run: Run, *, critical: bool = True) -> None:
        """Run `run` as component `name` until `stop` (a second start of a name is refused)."""
        if name in self._components:
            raise ValueError(f"component {name!r} is already supervised")
        component = _Component(name, run, ComponentState(critical=critical))
        self._components[name] = component
        COMPONENT_UP.labels(self.service, name).set(0)
        component.task = asyncio.create_task(self._keep_running(component),
                                             name=f"{self.service}:{name}")

    def states(self) -> dict[str, ComponentState]:
        return {name: component.status for name, component in self._components.items()}

    def problems(self) -> dict[str, str]:
        """Critical components that are not up (or are degraded), name -> reason, for /readyz."""
        problems: dict[str, str] = {}
        for name, component in self._components.items():
            status = component.status
            if not status.critical or status.healthy:
                continue
            if status.state == "up":
                problems[name] = f"degraded: {status.degraded}"
            elif status.state == "starting":
                problems[name] = "starting"
            else:
                problems[name] = f"down: {status.error}"
        return problems

    def is_up(self, name: str) -> bool:
        component = self._components.get(name)
        return component is not None and component.status.state == "up"

    async def wait_up(self, name: str, timeout: float | None = None) -> bool:
        """Wait until component `name` is up; False when `timeout` passed first."""
        component = self._components[name]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(component.up.wait(), timeout)
        return component.status.state == "up"

    def degrade(self, name: str, reason: str) -> None:
        """Mark a running component unwell (a problem for /readyz) without restarting it."""
        status = self._components[name].status
        if status.degraded is None:
            self.log.warning("component_degraded", name=name, reason=reason)
        status.degraded = reason

    def restore(self, name: str) -> None:
        status = self._components[name].status
        if status.degraded is not None:
            self.log.info("component_restored", name=name)
            status.degraded = None

    async def remove(self, name: str) -> None:
        """Stop one component (cancelled and awaited) and forget it."""
        component = self._components.pop(name, None)
        if component is not None:
            await self._cancel(component)
            COMPONENT_UP.labels(self.service, name).set(0)

    async def stop(self) -> None:
        """Cancel every component and wait for each to end."""
        self._stopping = True
        components = list(self._components.values())
        await asyncio.gather(*(self._cancel(component) for component in components))
        for component in components:
            COMPONENT_UP.labels(self.service, component.name).set(0)

    @staticmethod
    async def _cancel(component: _Component) -> None:
        if component.task is not None and not component.task.done():
            component.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await component.task

    async def _keep_running(self, component: _Component) -> None:
        delay = self.first_delay_s
        while not self._stopping:
            went_up = False

            def ready() -> None:
                nonlocal went_up
                went_up = True
                self._mark_up(component)

            try:
                await component.run(ready)
                error = "ended"
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = repr(exc)[:500]
            if self._stopping:
                return
            self._mark_down(component, error)
            if went_up:
                delay = self.first_delay_s
            await asyncio.sleep(delay + random.random() * delay / 2)
            delay = min(delay * 2, self.max_delay_s)
            component.status.restarts += 1

    def _mark_up(self, component: _Component) -> None:
        status = component.status
        if status.state == "up":
            return
        previous, down_s = status.state, time.time() - status.since
        status.state, status.since = "up", time.time()
        component.up.set()
        COMPONENT_UP.labels(self.service, component.name).set(1)
        if previous == "down":
            self.log.info("component_up", name=component.name, down_s=round(down_s, 1),
                          restarts=status.restarts)
        else:
            self.log.info("component_up", name=component.name)

    def _mark_down(self, component: _Component, error: str) -> None:
        status = component.status
        status.error = error
        status.degraded = None
        if status.state == "down":
            return  # one line per state change, not per retry
        status.state, status.since = "down", time.time()
        component.up.clear()
        COMPONENT_UP.labels(self.service, component.name).set(0)
        self.log.warning("component_down", name=component.name, error=error,
                         critical=status.critical)


__all__ = ["ComponentState", "Ready", "Run", "Supervisor"]
