"""What the deployment files need to know of each service, read from the code."""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from ..channel import discover_channels

IMAGE = "intake-gateway"
CONFIG_MOUNT = "/etc/intake/intake.yaml"
DATA_MOUNT = "/var/lib/intake"
# Over the 30 s shutdown timeout of `serve` (in-flight work, then the outbox drain).
GRACE_S = 45
AGENT_API_PREFIX = "/api/v1/"


@dataclass(frozen=True)
class ServiceSpec:
    """One `intake run <name>` service as the deployment sees it."""

    name: str
    port: int
    connector: bool
    public_paths: tuple[str, ...] = ()  # HTTP paths the public reaches (forms, callbacks)
    api_paths: tuple[str, ...] = ()  # the agent API
    queues: tuple[str, ...] = ()  # logical queues it consumes (scaled on their depth)
    tcp_ports: tuple[tuple[str, int], ...] = ()  # other listeners, e.g. ("smtp", 2525)
    database: bool = False
    sender: bool = False

    @property
    def env_name(self) -> str:
        return self.name.upper().replace("-", "_")

    @property
    def http_edge(self) -> bool:
        return bool(self.public_paths or self.api_paths)


def path_prefixes(paths: list[str]) -> tuple[str, ...]:
    """The fewest prefixes that cover every route path: `/forms/{id}` and `/forms/x.json`
    give `/forms/`; a path without a variable stays as it is unless a prefix covers it."""
    prefixes = set()
    for path in paths:
        literal = path.split("{", 1)[0]
        prefixes.add(literal if "{" not in path else literal[:literal.rfind("/") + 1])
    kept = sorted(p for p in prefixes
                  if not any(o != p and o.endswith("/") and p.startswith(o) for o in prefixes))
    return tuple(kept)


def _port_default(module: str, klass: str) -> int:
    settings = getattr(importlib.import_module(module), klass)
    return int(settings.model_fields["port"].default)


def ticket_core_port() -> int:
    return _port_default("ticket_core.settings", "TicketCoreSettings")


def services() -> list[ServiceSpec]:
    """Ticket core, router, then every connector (sorted): the one list deploy/ follows."""
    found = [
        ServiceSpec("ticket-core", ticket_core_port(),
                    connector=False, api_paths=(AGENT_API_PREFIX,),
                    queues=("ticket_core", "ticket_core.delivery"), database=True),
        ServiceSpec("router", _port_default("router.settings", "RouterSettings"),
                    connector=False, queues=("router",)),
    ]
    for name, channel in sorted(discover_channels().items()):
        fields = channel.settings.model_fields
        tcp = tuple((field.removesuffix("_port"), int(info.default))
                    for field, info in sorted(fields.items())
                    if field.endswith("_port") and isinstance(info.default, int))
        paths = path_prefixes([str(getattr(route, "path", "")) for route in channel.http_routes()])
        sender = channel.sender is not None
        found.append(ServiceSpec(
            name, int(fields["port"].default), connector=True, public_paths=paths,
            queues=(f"outbound.{name}",) if sender else (), tcp_ports=tcp, sender=sender))
    return found


def service_names() -> list[str]:
    return [spec.name for spec in services()]
