"""The `intake` command: run services, inspect and replay dead letters, check the config."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .channel import discover_channels
from .config import ConfigDocument, load_document, merge_rules
from .errors import ConfigInvalid, IntakeError
from .logging import configure_logging
from .message import SCHEMAS
from .settings import REPO_ROOT, IntakeSettings

SCHEMA_DIR = REPO_ROOT / "schemas"
Builder = Callable[[IntakeSettings, ConfigDocument], Any]


def load_config(settings: IntakeSettings) -> ConfigDocument:
    doc = load_document(settings.config_path)
    rules = load_document(settings.rules_path) if settings.rules_path else None
    return merge_rules(doc, rules)


def service_builders() -> dict[str, Builder]:
    """Core services first, then every connector found under `connectors/`."""
    from router.service import build_service as build_router
    from ticket_core.service import build_service as build_ticket_core

    builders: dict[str, Builder] = {"ticket-core": build_ticket_core, "router": build_router}
    for name, channel in discover_channels().items():
        builders[name] = channel.build_service
    return builders


def check_config(settings: IntakeSettings) -> list[str]:
    """Validate every section with the model of the service that reads it."""
    from router.rules import load_rules

    try:
        doc = load_config(settings)
    except ConfigInvalid as exc:
        return exc.problems
    problems: list[str] = []
    try:
        load_rules(doc, _rules_bytes(settings))
    except ConfigInvalid as exc:
        problems.extend(exc.problems)
    channels = discover_channels()
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

    settings = IntakeSettings()
    configure_logging(settings.log_level)
    try:
        doc = load_config(settings)
    except ConfigInvalid as exc:
        _print_problems(exc.problems)
        return 2
    builders = service_builders()
    names = list(builders) if args.service == "all" else [args.service]
    unknown = [n for n in names if n not in builders]
    if unknown:
        print(f"unknown service {unknown[0]!r}; known: all, {', '.join(builders)}",
              file=sys.stderr)
        return 2
    try:
        services = [builders[name](settings, doc) for name in names]
    except ConfigInvalid as exc:
        _print_problems(exc.problems)
        return 2

    def banner(listening: list[tuple[Any, str]]) -> None:
        lines = ["intake is running:"]
        for service, url in listening:
            extra = " (SMTP on its own port)" if service.name == "email" else ""
            lines.append(f"  {service.name:<12} {url}{extra}")
        token_file = settings.data_dir / "api-token"
        if "ticket-core" in names:
            token = (settings.api_token.get_secret_value() if settings.api_token
                     else token_file.read_text().strip() if token_file.exists() else "?")
            lines.append(f"  agent API token: {token}")
        if "webform" in names:
            lines.append("  try the contact form: "
                         f"{dict((s.name, u) for s, u in listening)['webform']}/forms/contact")
        print("\n".join(lines), flush=True)

    _run_async(serve(services, started=banner))
    return 0


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
    for name, channel in discover_channels().items():
        print(f"{name:<12} settings={channel.settings.__name__} "
              f"accounts={channel.accounts.__name__}")
    return 0


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


def _print_problems(problems: list[str]) -> None:
    print(f"config has {len(problems)} problem(s):", file=sys.stderr)
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
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
