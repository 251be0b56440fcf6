"""The Channel declaration a connector exports, and the service the kernel builds from it."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic import BaseModel
from pydantic_settings import BaseSettings

from .components import Listener, SenderHook, Task
from .config import ConfigDocument, validate
from .settings import IntakeSettings

if TYPE_CHECKING:
    from .service import Service

CONNECTORS_PACKAGE = "connectors"
CONNECTORS_DIR = Path(__file__).resolve().parent.parent / CONNECTORS_PACKAGE

Routes = Callable[[], Sequence[web.AbstractRouteDef]]


@dataclass(frozen=True)
class Inbound:
    """How messages come in: HTTP routes, listeners, tasks; any one of them is enough.

    `routes` is a function returning aiohttp routes (called when the service is built, so that
    importing a connector builds nothing); listeners and tasks are intake.components'.
    """

    routes: Routes | None = None
    listeners: Sequence[Listener] = ()
    tasks: Sequence[Task] = ()


@dataclass(frozen=True)
class Command:
    """An `intake <channel> <name> …` subcommand: its arguments and its handler.

    `arguments(parser)` adds the subcommand's arguments to its argparse parser; `run(args)`
    does the work and returns the exit status. Both run only when the command is invoked.
    """

    name: str
    help: str
    run: Callable[[argparse.Namespace], int]
    arguments: Callable[[argparse.ArgumentParser], None] | None = None


@dataclass(frozen=True)
class Channel:
    """What a connector is: its name, settings, accounts, inbound, sender and commands.

    `settings` is a pydantic-settings class with a `port` field (prefix `INTAKE_<NAME>_`);
    `accounts` validates the YAML section `channels.<name>`. `inbound` declares how messages
    come in (`routes=` alone is the short form of `inbound=Inbound(routes=…)`); `sender` is the
    channel's `OutboundSender` class (intake/sending.py), run on `intake.outbound.<name>`;
    `commands` become `intake <name> …` subcommands; `ready_checks` add to `/readyz`.
    """

    name: str
    settings: type[BaseSettings]
    accounts: type[BaseModel]
    routes: Routes | None = None
    inbound: Inbound = field(default_factory=Inbound)
    sender: Any = None
    commands: Sequence[Command] = ()
    contexts: Sequence[Callable[[web.Application], Any]] = field(default_factory=tuple)
    # Called as shutdown begins (aiohttp's on_shutdown): close long-lived connections.
    shutdown_hooks: Sequence[Callable[[web.Application], Awaitable[None]]] = ()
    client_max_size: int = 1024**2
    # More `/readyz` checks after the outbox's (a PBX line's state): each returns None, a
    # problem (503), or a dict merged into the body as details.
    ready_checks: Sequence[Callable[[web.Application], Awaitable[Any]]] = ()

    def __post_init__(self) -> None:
        # `routes` always answers every HTTP route, whichever way they were declared, so that
        # callers (tests, the contract suite) may call `CHANNEL.routes()` on any channel.
        declared = [make for make in (self.routes, self.inbound.routes) if make is not None]
        if len(declared) == 1:
            object.__setattr__(self, "routes", declared[0])
        elif len(declared) == 2:
            def every_route() -> list[web.AbstractRouteDef]:
                return [route for make in declared for route in make()]

            object.__setattr__(self, "routes", every_route)

    def load_accounts(self, doc: ConfigDocument) -> BaseModel:
        return validate(doc, self.accounts, doc.section("channels", self.name),
                        prefix=("channels", self.name))

    def http_routes(self) -> list[web.AbstractRouteDef]:
        return list(self.routes()) if self.routes is not None else []

    def build_service(self, settings: IntakeSettings, doc: ConfigDocument) -> Service:
        from .service import (
            ACCOUNTS,
            SERVICE_SETTINGS,
            Service,
            blobs_context,
            connector_bus_context,
            outbox_ready,
            publisher_context,
        )

        own = self.settings()
        accounts = self.load_accounts(doc)
        port = int(own.model_dump()["port"])  # every channel's settings have one (docstring)
        return Service(
            name=self.name,
            port=port,
            settings=settings,
            routes=self.http_routes(),
            listeners=self.inbound.listeners,
            tasks=self.inbound.tasks,
            senders=[self._sender_runner] if self.sender is not None else [],
            contexts=[connector_bus_context, blobs_context, publisher_context, *self.contexts],
            ready_checks=[outbox_ready, *self.ready_checks],
            state={SERVICE_SETTINGS: own, ACCOUNTS: accounts},
            shutdown_hooks=self.shutdown_hooks,
            client_max_size=max(self.client_max_size,
                                int(getattr(own, "max_body_bytes", 0) or 0) + 64 * 1024),
        )

    def _sender_runner(self, app: web.Application) -> SenderHook:
        """The kernel's runner around this channel's sender (intake/sending.py)."""
        from .sending import SenderRunner
        from .service import ACCOUNTS, BUS, SERVICE_SETTINGS, SETTINGS

        return SenderRunner.for_service(
            app[BUS], self.name, self.sender, app[SETTINGS],
            channel_settings=app[SERVICE_SETTINGS], accounts=app[ACCOUNTS])


class ConnectorBroken(Exception):
    """A connector package failed to import; `broken` maps its name to the error."""

    def __init__(self, broken: dict[str, str]) -> None:
        super().__init__("; ".join(f"connector {name!r} cannot be loaded: {error}"
                                   for name, error in sorted(broken.items())))
        self.broken = broken


def connector_names() -> list[str]:
    """The packages under `connectors/` (every folder on the package's path), not imported."""
    package = importlib.import_module(CONNECTORS_PACKAGE)
    return sorted({info.name for info in pkgutil.iter_modules(list(package.__path__))
                   if info.ispkg})


def load_channel(name: str) -> Channel | None:
    """Import one connector, `connectors.<name>`; None when it exports no CHANNEL.

    Only this package is imported: one broken connector stops no other service.
    """
    module = importlib.import_module(f"{CONNECTORS_PACKAGE}.{name}")
    channel = getattr(module, "CHANNEL", None)
    return channel if isinstance(channel, Channel) else None


def find_channels() -> tuple[dict[str, Channel], dict[str, str]]:
    """Every connector that loads (by channel name), and those that do not (name -> error)."""
    found: dict[str, Channel] = {}
    broken: dict[str, str] = {}
    for name in connector_names():
        try:
            channel = load_channel(name)
        except Exception as exc:  # any error of a connector's own code, reported by name
            broken[name] = f"{type(exc).__name__}: {exc}"
            continue
        if channel is not None:
            found[channel.name] = channel
    return found, broken


def discover_channels() -> dict[str, Channel]:
    """Every folder under `connectors/` that exports CHANNEL; no list to keep by hand.

    Raises `ConnectorBroken` naming each connector that fails to import.
    """
    found, broken = find_channels()
    if broken:
        raise ConnectorBroken(broken)
    return found
