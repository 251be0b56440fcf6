"""The Channel declaration a connector exports, and the service the kernel builds from it."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic_settings import BaseSettings

from .config import ConfigDocument, validate
from .settings import IntakeSettings

CONNECTORS_DIR = Path(__file__).resolve().parent.parent / "connectors"


@dataclass(frozen=True)
class Channel:
    """What a connector is: its name, settings, accounts model, inbound routes and sender.

    `settings` is a pydantic-settings class with a `port` field (prefix `INTAKE_<NAME>_`);
    `accounts` validates the YAML section `channels.<name>`; `routes` returns aiohttp routes
    that read their parts from the app keys of `intake.service`.
    """

    name: str
    settings: type[BaseSettings]
    accounts: type[BaseModel]
    routes: Callable[[], Sequence[web.AbstractRouteDef]]
    sender: Any = None
    contexts: Sequence[Callable[[web.Application], Any]] = field(default_factory=tuple)
    client_max_size: int = 1024**2

    def load_accounts(self, doc: ConfigDocument) -> BaseModel:
        return validate(doc, self.accounts, doc.section("channels", self.name),
                        prefix=("channels", self.name))

    def build_service(self, settings: IntakeSettings, doc: ConfigDocument) -> Any:
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
        return Service(
            name=self.name,
            port=int(own.port),  # type: ignore[attr-defined]
            settings=settings,
            routes=list(self.routes()),
            contexts=[connector_bus_context, blobs_context, publisher_context, *self.contexts],
            ready_checks=[outbox_ready],
            state={SERVICE_SETTINGS: own, ACCOUNTS: accounts},
            client_max_size=max(self.client_max_size,
                                int(getattr(own, "max_body_bytes", 0) or 0) + 64 * 1024),
        )


def discover_channels() -> dict[str, Channel]:
    """Every folder under `connectors/` that exports CHANNEL; no list to keep by hand."""
    found: dict[str, Channel] = {}
    for info in sorted(pkgutil.iter_modules([str(CONNECTORS_DIR)]), key=lambda i: i.name):
        if not info.ispkg:
            continue
        module = importlib.import_module(f"connectors.{info.name}")
        channel = getattr(module, "CHANNEL", None)
        if isinstance(channel, Channel):
            found[channel.name] = channel
    return found
