"""The `intake` command: run services, inspect and replay dead letters, check the config,
check the health of a service and of the deployment (`health`, `doctor`), drain outboxes."""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import importlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .channel import (
    Channel,
    ConnectorBroken,
    connector_names,
    discover_channels,
    find_channels,
    load_channel,
)
from .config import ConfigDocument, load_document, merge_rules
from .errors import ConfigInvalid, IntakeError, SettingInvalid
from .logging import configure_logging
from .message import SCHEMAS
from .settings import REPO_ROOT, IntakeSettings, settings_problems

SCHEMA_DIR = REPO_ROOT / "schemas"
Builder = Callable[[IntakeSettings, ConfigDocument], Any]


def load_config(settings: IntakeSettings) -> ConfigDocument:
    doc = load_document(settings.config_path)
    rules = load_document(settings.rules_path) if settings.rules_path else None
    return merge_rules(doc, rules)


CORE_SERVICES = {"ticket-core": "ticket_core.service", "router": "router.service"}


def builder_for(name: str) -> Builder:
    """The builder of one service, importing only what it needs (its package, the kernel).

    A core service imports no connector; a connector imports only its own package. Raises
    `LookupError` for a name that is neither.
    """
    if name in CORE_SERVICES:
        module = importlib.import_module(CORE_SERVICES[name])
        build: Builder = module.build_service
        return build
    if name not in connector_names():
        raise LookupError(name)
    channel = load_channel(name)
    if channel is None:
        raise LookupError(name)
    return channel.build_service


def service_builders() -> dict[str, Builder]:
    """Core services first, then every connector found under `connectors/`.

    Raises `ConnectorBroken` naming every connector that fails to import.
    """
    builders: dict[str, Builder] = {name: builder_for(name) for name in CORE_SERVICES}
    for name, channel in discover_channels().items():
        builders[name] = channel.build_service
    return builders


def check_config(settings: IntakeSettings) -> list[str]:
    """Validate every section with the model of the service that reads it."""
    from router.rules import load_rules

    # The ticket core's own section (imported by name: the kernel's type check stays on it).
    load_auto_replies = importlib.import_module("ticket_core.autoreply").load_auto_replies
    load_tickets = importlib.import_module("ticket_core.tickets_config").load_tickets

    try:
        doc = load_config(settings)
    except ConfigInvalid as exc:
        return exc.problems
    except SettingInvalid as exc:
        return [str(exc)]
    problems: list[str] = []
    try:
        load_rules(doc, _rules_bytes(settings))
    except ConfigInvalid as exc:
        problems.extend(exc.problems)
    for load_section in (load_auto_replies, load_tickets):
        try:
            load_section(doc)
        except ConfigInvalid as exc:
            problems.extend(exc.problems)
    channels, broken = find_channels()
    problems.extend(f"connector {name!r} cannot be loaded: {error}"
                    for name, error in sorted(broken.items()))
    for name in (doc.section("channels") or {}):
        if name not in channels:
            problems.append(f"{doc.where(('channels', name))}: channels.{name}: unknown channel "
                            f"(known: {', '.join(sorted(channels))})")
    for channel in channels.values():
        try:
            channel.load_accounts(doc)
        except ConfigInvalid as exc:
            problems.extend(exc.problems)
    return problems


def _rules_bytes(settings: IntakeSettings) -> bytes:
    path = settings.rules_path or settings.config_path
    return path.read_bytes()


# -- commands ------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from .service import serve

    try:
        settings = IntakeSettings()
        configure_logging(settings.log_level)
        token_existed = (settings.data_dir / "api-token").exists()
        doc = load_config(settings)
        if args.service == "all":
            builders = service_builders()
        else:
            builders = {args.service: builder_for(args.service)}
        services = [build(settings, doc) for build in builders.values()]
    except LookupError:
        known = ", ".join([*CORE_SERVICES, *connector_names()])
        print(f"unknown service {args.service!r}; known: all, {known}", file=sys.stderr)
        return 2
    except ConnectorBroken as exc:
        _print_problems([str(exc)], what="intake run all")
        return 2
    except ConfigInvalid as exc:
        _print_problems(exc.problems)
        return 2
    except SettingInvalid as exc:
        _print_problems([str(exc)], what="settings")
        return 2
    except ValidationError as exc:  # a settings class refused the environment
        _print_problems(settings_problems(exc), what="settings")
        return 2
    names = list(builders)
    token_line = (api_token_line(settings, generated=not token_existed)
                  if "ticket-core" in names else None)

    def banner(listening: list[tuple[Any, str]]) -> None:
        lines = ["intake is running:"]
        for service, url in listening:
            extra = " (SMTP on its own port)" if service.name == "email" else ""
            lines.append(f"  {service.name:<12} {url}{extra}")
        if token_line:
            lines.append(f"  {token_line}")
        if "webform" in names:
            lines.append("  try the contact form: "
                         f"{dict((s.name, u) for s, u in listening)['webform']}/forms/contact")
        print("\n".join(lines), flush=True)

    _run_async(serve(services, started=banner))
    _exit_even_if_threads_hang()
    return 0


def _exit_even_if_threads_hang(after_s: float = 10.0) -> None:
    """`serve` has finished its work; the interpreter now waits for non-daemon threads.

    One that a library leaks would keep a stopped service alive for ever (aiosqlite's
    connection threads are not daemons, and a connection whose opening was cancelled by the
    shutdown is never handed to the pool that would close it). Past `after_s`, name the
    threads left, dump their stacks to stderr and exit 0: the work is done.
    """
    def watchdog() -> None:
        time.sleep(after_s)
        left = sorted(t.name for t in threading.enumerate()
                      if t.is_alive() and not t.daemon and t is not threading.main_thread())
        from .logging import get_logger

        get_logger(service="intake").warning("threads_left_at_exit", threads=left,
                                             waited_s=after_s)
        faulthandler.dump_traceback(all_threads=True)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)

    threading.Thread(target=watchdog, name="exit-watchdog", daemon=True).start()


def api_token_line(settings: IntakeSettings, *, generated: bool) -> str:
    """Where the agent API token comes from; the token itself only if this run generated it.

    `generated`: the token file did not exist before the ticket core's service was built
    (which writes a missing one). A token from the environment or from an earlier run is never
    printed, only where to find it.
    """
    token_file = settings.data_dir / "api-token"
    if settings.api_token is not None:
        return "agent API token: from INTAKE_API_TOKEN"
    if generated and token_file.exists():
        return (f"agent API token: {token_file.read_text().strip()} "
                f"(generated now, kept in {token_file})")
    return f"agent API token: in {token_file}"


def _run_async(coro: Any) -> Any:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:  # pragma: no cover - uvloop is a pinned dependency
        return asyncio.run(coro)


async def _with_bus(settings: IntakeSettings, work: Callable[[Any], Any]) -> Any:
    from .bus import Bus

    bus = Bus(settings, "intake-cli")
    await bus.connect(timeout=15)
    try:
        return await work(bus)
    finally:
        await bus.close()


def cmd_dlq(args: argparse.Namespace) -> int:
    """`intake dlq list|show|replay|migrate`: list and show change nothing on the broker."""
    settings = IntakeSettings()
    configure_logging("warning")
    try:
        return _dlq(args, settings)
    except IntakeError as exc:  # an old dead queue, a replay running, a broker refusal
        print(f"{exc.reason}: {exc}", file=sys.stderr)
        return 1


def _dlq(args: argparse.Namespace, settings: IntakeSettings) -> int:
    if args.action == "list":
        every = asyncio.run(_with_bus(settings, lambda bus: bus.browse_dead(
            None, replayed=True)))
        letters = [letter for letter in every if args.all or letter.replayed_at is None]
        hidden = len(every) - len(letters)
        letters = letters[:args.limit]
        if args.json:
            print(json.dumps([_letter_summary(letter) for letter in letters], indent=2,
                             ensure_ascii=False))
            return 0
        if not letters:
            print("no dead letters")
        for letter in letters:
            summary = _letter_summary(letter)
            replayed = f"  replayed {summary['replayed_at']}" if summary["replayed_at"] else ""
            print(f"{summary['id']}  {summary['dead_at'] or '-':<25}  {summary['reason']:<22} "
                  f"{summary['queue'] or '-':<28} {summary['idempotency_key'] or '-'}{replayed}")
        if hidden:
            print(f"({hidden} replayed letter(s) not shown: `intake dlq list --all`)",
                  file=sys.stderr)
        return 0
    if args.action == "show":
        if not args.id:
            print("usage: intake dlq show ID", file=sys.stderr)
            return 2
        letter = asyncio.run(_with_bus(settings, lambda bus: bus.find_dead(args.id)))
        if letter is None:
            print(f"no dead letter {args.id}", file=sys.stderr)
            return 1
        summary = _letter_summary(letter)
        summary["error"] = letter.error
        summary["headers"] = {k: _jsonable(v) for k, v in letter.headers.items()}
        try:
            summary["body"] = json.loads(letter.body)
        except ValueError:
            summary["body"] = letter.body.decode("utf-8", "replace")
        print(json.dumps(summary, indent=2, ensure_ascii=False, default=str))
        return 0
    if args.action == "replay":
        if not args.id and not args.all:
            print("usage: intake dlq replay ID | --all", file=sys.stderr)
            return 2
        ids = None if args.all else [args.id]
        bodies = {}
        if args.body:
            if not args.id:
                print("--body needs the ID of one dead letter", file=sys.stderr)
                return 2
            bodies[args.id] = Path(args.body).read_bytes()
        replayed = asyncio.run(_with_bus(settings, lambda bus: bus.replay_dead(ids, bodies)))
        print(f"replayed {len(replayed)} dead letter(s)")
        for dead_id in replayed:
            print(f"  {dead_id}")
        if not replayed and args.id:
            print(f"{args.id} is not a dead letter waiting for replay (`intake dlq show "
                  f"{args.id}` says whether it was replayed already)", file=sys.stderr)
        return 0 if replayed or args.all else 1
    if args.action == "migrate":
        moved = asyncio.run(_with_bus(settings, lambda bus: bus.migrate_dead()))
        print(f"moved {moved} dead letter(s) from the old queue into the stream")
        return 0
    return 2


def _letter_summary(letter: Any) -> dict[str, Any]:
    key = None
    try:
        key = json.loads(letter.body).get("idempotency_key")
    except (ValueError, AttributeError):
        pass
    return {"id": letter.id, "reason": letter.reason, "queue": letter.queue,
            "exchange": letter.exchange, "routing_key": letter.routing_key,
            "dead_at": _when(letter.dead_at), "idempotency_key": key, "size": len(letter.body),
            "offset": letter.offset, "replayed_at": _when(letter.replayed_at)}


def _when(timestamp: float | None) -> str | None:
    return (datetime.fromtimestamp(float(timestamp), UTC).isoformat(timespec="seconds")
            if timestamp else None)


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def schema_documents() -> dict[str, str]:
    return {name: json.dumps(model.model_json_schema(), indent=2, ensure_ascii=False) + "\n"
            for name, model in SCHEMAS.items()}


def cmd_schema(args: argparse.Namespace) -> int:
    documents = schema_documents()
    if args.write:
        SCHEMA_DIR.mkdir(exist_ok=True)
        for name, text in documents.items():
            (SCHEMA_DIR / name).write_text(text, encoding="utf-8")
            print(f"wrote {SCHEMA_DIR / name}")
        return 0
    print(documents[f"{args.model}.v1.json"], end="")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    overrides: dict[str, Any] = {}
    if args.path:
        overrides["config"] = Path(args.path)
    settings = IntakeSettings(**overrides)
    problems = check_config(settings)
    if problems:
        _print_problems(problems)
        return 1
    print(f"{settings.config_path}: OK")
    return 0


def cmd_connectors(args: argparse.Namespace) -> int:
    if args.action == "check":
        from .conformance import check_all

        report = check_all()
        failed = False
        for name, problems in report.items():
            print(f"{name}: {'OK' if not problems else f'{len(problems)} problem(s)'}")
            for problem in problems:
                print(f"  {problem}")
            failed = failed or bool(problems)
        return 1 if failed else 0
    channels, broken = find_channels()
    for name, channel in channels.items():
        print(f"{name:<12} settings={channel.settings.__name__} "
              f"accounts={channel.accounts.__name__}")
    for name, error in sorted(broken.items()):
        print(f"{name:<12} BROKEN: {error}")
    return 1 if broken else 0


def cmd_new_connector(args: argparse.Namespace) -> int:
    from .channel import CONNECTORS_DIR
    from .scaffold import new_connector

    try:
        folder = new_connector(args.name, CONNECTORS_DIR, port=args.port)
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    print(f"wrote {folder}; next: capture real payloads into {folder / 'fixtures'}, then\n"
          f"  .venv/bin/python -m pytest {folder}   # the contract passes from the start\n"
          f"  .venv/bin/intake connectors check")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from ticket_core.db import migrate

    settings = IntakeSettings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(migrate(settings.effective_database_url))
    print("database is at the latest revision")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    # Imported by name, like the router's commands: the ticket core's modules stay its own.
    reindex = importlib.import_module("ticket_core.search_index").reindex_database
    settings = IntakeSettings()
    count = asyncio.run(reindex(settings.effective_database_url))
    print(f"search index rebuilt: {count} ticket(s)")
    return 0


def cmd_settings(args: argparse.Namespace) -> int:
    from .settings_table import README, markdown, readme_block, rewrite_readme

    if args.write:
        changed = rewrite_readme()
        print(f"{README}: {'settings table rewritten' if changed else 'already current'}")
        return 0
    if args.check:
        if readme_block(README.read_text(encoding="utf-8")) != markdown():
            print(f"{README}: the settings table is stale; run `make settings`", file=sys.stderr)
            return 1
        print(f"{README}: settings table current")
        return 0
    print(markdown(), end="")
    return 0


def _print_problems(problems: list[str], what: str = "config") -> None:
    print(f"{what} has {len(problems)} problem(s):", file=sys.stderr)
    for problem in problems:
        print(f"  {problem}", file=sys.stderr)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="intake", description=__doc__)
    sub = root.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a service, or all of them in one process")
    run.add_argument("service", help="ticket-core, router, a connector name, or all")
    run.set_defaults(func=cmd_run)

    dlq = sub.add_parser("dlq", help="inspect and replay dead letters")
    dlq.add_argument("action", choices=["list", "show", "replay", "migrate"],
                     help="migrate: move an older version's intake.dead queue into a stream")
    dlq.add_argument("id", nargs="?")
    dlq.add_argument("--all", action="store_true",
                     help="list: replayed letters too; replay: every letter not replayed yet")
    dlq.add_argument("--body", metavar="FILE",
                     help="replay ID with this repaired body (e.g. edited from `dlq show`)")
    dlq.add_argument("--json", action="store_true")
    dlq.add_argument("--limit", type=int, default=1000)
    dlq.set_defaults(func=cmd_dlq)

    schema = sub.add_parser("schema", help="print the message JSON Schema")
    schema.add_argument("--model", choices=["message", "outbound", "delivery_result"],
                        default="message")
    schema.add_argument("--write", action="store_true", help="rewrite the files in schemas/")
    schema.set_defaults(func=cmd_schema)

    config = sub.add_parser("config", help="validate the YAML config")
    config.add_argument("action", choices=["check"])
    config.add_argument("path", nargs="?", help="default: INTAKE_CONFIG")
    config.set_defaults(func=cmd_config)

    # `intake route check|lint|test|explain` (the router's own module, imported by name).
    importlib.import_module("router.cli").add_route_command(sub)

    connectors = sub.add_parser("connectors",
                                help="list the connectors found, or check them all alike")
    connectors.add_argument("action", choices=["list", "check"])
    connectors.set_defaults(func=cmd_connectors)

    scaffold = sub.add_parser("new-connector",
                              help="write a connector folder that passes the contract")
    scaffold.add_argument("name", help="a channel of the common message not built yet")
    scaffold.add_argument("--port", type=int, default=None,
                          help="default: the channel's port in DESIGN.md")
    scaffold.set_defaults(func=cmd_new_connector)

    migrate = sub.add_parser("migrate", help="apply database migrations")
    migrate.set_defaults(func=cmd_migrate)

    search = sub.add_parser("search", help="ticket search: rebuild the index")
    search.add_argument("action", choices=["reindex"])
    search.set_defaults(func=cmd_search)

    settings = sub.add_parser("settings",
                              help="print the table of every environment variable (markdown)")
    settings.add_argument("--markdown", action="store_true", help="the default output")
    settings.add_argument("--write", action="store_true",
                          help="rewrite the table in README.md between its markers")
    settings.add_argument("--check", action="store_true",
                          help="exit 1 when README.md's table is stale")
    settings.set_defaults(func=cmd_settings)

    from .ops import add_commands

    add_commands(sub)  # health, outbox, doctor
    root.epilog = ("A connector's own commands: intake <channel> <command> … "
                   "(`intake <channel> --help` lists them).")
    return root


def channel_parser(channel: Channel) -> argparse.ArgumentParser:
    """`intake <channel> …`: the subcommands the channel declares in `commands`."""
    root = argparse.ArgumentParser(prog=f"intake {channel.name}",
                                   description=f"commands of the {channel.name} channel")
    sub = root.add_subparsers(dest="command", required=True)
    for command in channel.commands:
        parser_ = sub.add_parser(command.name, help=command.help, description=command.help)
        if command.arguments is not None:
            command.arguments(parser_)
        parser_.set_defaults(func=command.run)
    return root


def builtin_commands(root: argparse.ArgumentParser) -> set[str]:
    # argparse keeps its subcommands in the subparsers action; there is no public accessor.
    return {name for action in root._actions
            if isinstance(action, argparse._SubParsersAction) for name in action.choices}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    root = parser()
    builtin = builtin_commands(root)
    first = argv[0] if argv else ""
    # `intake <channel> …` imports that one connector only, so a broken one stops nothing else.
    if first and not first.startswith("-") and first not in builtin:
        if first in connector_names():
            channel = load_channel(first)
            if channel is not None and channel.commands:
                args = channel_parser(channel).parse_args(argv[1:])
                return int(args.func(args) or 0)
            print(f"the {first} channel has no commands", file=sys.stderr)
            return 2
    args = root.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
