"""Operating commands: `intake health SERVICE [--ready]`, `intake outbox list|drain`,
`intake doctor` (intake/doctor.py), `intake deploy render` (intake/deploy/). No curl or
sqlite3 is needed in the image for them."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from .settings import IntakeSettings

CORE_SETTINGS = {"ticket-core": ("ticket_core.settings", "TicketCoreSettings"),
                 "router": ("router.settings", "RouterSettings")}
# `INTAKE_HOST` values that mean "every address": the probe then asks the loopback.
ANY_ADDRESS = {"", "0.0.0.0", "::", "[::]"}


def service_port(service: str) -> int:
    """`INTAKE_<SERVICE>_PORT`, else the default port of that service's settings class.

    Raises `LookupError` for a name that is neither a core service nor a connector.
    """
    variable = f"INTAKE_{service.upper().replace('-', '_')}_PORT"
    if os.environ.get(variable):
        return int(os.environ[variable])
    import importlib

    from .channel import connector_names, load_channel

    if service in CORE_SETTINGS:
        module, name = CORE_SETTINGS[service]
        klass = getattr(importlib.import_module(module), name)
    elif service in connector_names() and (channel := load_channel(service)) is not None:
        klass = channel.settings
    else:
        raise LookupError(service)
    return int(klass.model_fields["port"].default)


def probe_url(service: str, ready: bool, host: str) -> str:
    host = "127.0.0.1" if host in ANY_ADDRESS else host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{service_port(service)}/{'readyz' if ready else 'healthz'}"


def cmd_health(args: argparse.Namespace) -> int:
    """Exit 0 when the service answers 200 on `/healthz` (or `/readyz`), 1 otherwise."""
    host = os.environ.get("INTAKE_HOST", "127.0.0.1")
    try:
        url = probe_url(args.service, args.ready, host)
    except LookupError:
        print(f"unknown service {args.service!r}", file=sys.stderr)
        return 2
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    except (OSError, ValueError) as exc:
        print(f"{args.service}: {url} unreachable: {exc}", file=sys.stderr)
        return 1
    summary = body.decode("utf-8", "replace")[:500]
    print(f"{args.service}: {status} {summary}")
    return 0 if status == 200 else 1


def cmd_outbox(args: argparse.Namespace) -> int:
    from .outbox_files import all_outboxes, describe

    overrides: dict[str, Any] = {"data_dir": Path(args.data_dir)} if args.data_dir else {}
    settings = IntakeSettings(**overrides)
    outboxes = [path for path in all_outboxes(settings.data_dir)
                if args.service is None or describe(path).service == args.service]
    if args.action == "list":
        infos = [describe(path) for path in outboxes]
        if args.json:
            print(json.dumps([{"path": str(i.path), "service": i.service, "depth": i.depth,
                               "held": i.held} for i in infos], indent=2))
            return 0
        if not infos:
            print(f"no outboxes under {settings.data_dir / 'outbox'}")
        for info in infos:
            holder = "held by a running instance" if info.held else "not held"
            depth = "unreadable" if info.depth < 0 else f"{info.depth} waiting"
            print(f"{info.path}  {info.service:<12} {depth:<14} {holder}")
        return 0
    return asyncio.run(_drain(settings, outboxes))


async def _drain(settings: IntakeSettings, outboxes: list[Path]) -> int:
    from .bus import Bus
    from .logging import configure_logging
    from .outbox_files import describe, drain_unheld

    configure_logging("warning")
    bus = Bus(settings, "intake-cli")
    try:
        await bus.connect(timeout=15)
        sent = await drain_unheld(bus, outboxes)
    finally:
        await bus.close()
    print(f"published {sent} message(s) from outboxes no running instance holds")
    left = [describe(path) for path in outboxes if path.exists()]
    for info in left:
        if info.depth:
            why = "held by a running instance, which drains it" if info.held else "not drained"
            print(f"  {info.path}: {info.depth} waiting ({why})")
    return 0 if all(info.held or not info.depth for info in left) else 1


def cmd_deploy(args: argparse.Namespace) -> int:
    from .deploy.render import rendered, stale, write

    if args.write:
        changed = write()
        for path in changed:
            print(f"wrote {path}")
        print("deploy/ is current" if not changed else f"{len(changed)} file(s) rewritten")
        return 0
    if args.check:
        changed = stale()
        for path in changed:
            print(f"stale: {path}", file=sys.stderr)
        if changed:
            print("run `intake deploy render --write`", file=sys.stderr)
        return 1 if changed else 0
    for path in rendered():
        print(path)
    return 0


def add_commands(sub: Any) -> None:
    """The operating commands, on the `intake` parser's subcommands."""
    health = sub.add_parser("health", help="exit 0 when a service on this host answers 200 "
                            "on /healthz (or /readyz): a container's healthcheck")
    health.add_argument("service", help="ticket-core, router or a connector name")
    health.add_argument("--ready", action="store_true", help="ask /readyz instead")
    health.add_argument("--timeout", type=float, default=3.0)
    health.set_defaults(func=cmd_health)

    outbox = sub.add_parser("outbox", help="list the connectors' outboxes, or drain those no "
                            "running instance holds (a crashed or scaled-down replica's)")
    outbox.add_argument("action", choices=["list", "drain"])
    outbox.add_argument("--data-dir", help="default: INTAKE_DATA_DIR")
    outbox.add_argument("--service", help="only this connector's outboxes")
    outbox.add_argument("--json", action="store_true")
    outbox.set_defaults(func=cmd_outbox)

    deploy = sub.add_parser("deploy", help="render deploy/ (compose, proxy, Kubernetes, "
                            "RabbitMQ definitions, systemd) from the services in the code")
    deploy.add_argument("action", choices=["render"])
    deploy.add_argument("--write", action="store_true", help="rewrite the stale files")
    deploy.add_argument("--check", action="store_true", help="exit 1 while one is stale")
    deploy.set_defaults(func=cmd_deploy)

    from .doctor import cmd_doctor

    doctor = sub.add_parser("doctor", help="check config, broker, database, disk, outboxes, "
                            "blobs and clocks with this service's settings; one line per problem")
    doctor.add_argument("--service", help="also check this service's own settings")
    doctor.add_argument("--no-database", action="store_true",
                        help="skip the database (a connector's host never reaches it)")
    doctor.add_argument("--management-url", metavar="URL[,URL…]",
                        help="each broker node's management API, in the order of "
                        "INTAKE_AMQP_URL (default: its host at port 15672, its credentials)")
    doctor.set_defaults(func=cmd_doctor)
