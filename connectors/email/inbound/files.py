"""`intake email import PATH --account ID`: mail from files by the same path as SMTP.

A `.eml` file, a folder of them, an mbox, or a blob reference (`sha256:…`, a raw mail kept by
the gateway, again after a fix). Each mail goes through `deliver()`, so keys, flags and
threading are those of SMTP: importing twice stores nothing twice.
"""

from __future__ import annotations

import argparse
import asyncio
import mailbox
from collections.abc import Iterator
from pathlib import Path

from intake import (
    Bus,
    IntakeSettings,
    Outbox,
    Publisher,
    blob_store_for,
    load_document,
)

from ..normalize import Envelope
from ..settings import EmailAccounts, EmailSettings
from . import Deliverer, Target


def mails_at(path: str) -> Iterator[tuple[str, bytes]]:
    """(name, raw) of every mail at `path`: a file, a folder of `.eml`, or an mbox."""
    location = Path(path)
    if location.is_dir():
        for file in sorted(location.rglob("*.eml")):
            yield str(file), file.read_bytes()
        return
    head = location.read_bytes()[:5]
    if head == b"From ":
        for index, item in enumerate(mailbox.mbox(str(location), create=False)):
            yield f"{location}#{index}", item.as_bytes()
        return
    yield str(location), location.read_bytes()


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="a .eml file, a folder of them, an mbox, or sha256:<hex>")
    parser.add_argument("--account", required=True, help="the email account id")


def run(args: argparse.Namespace) -> int:
    return asyncio.run(import_mail(args.path, args.account))


async def import_mail(path: str, account_id: str) -> int:
    settings = IntakeSettings()
    from ..channel import CHANNEL

    accounts = CHANNEL.load_accounts(load_document(settings.config))
    assert isinstance(accounts, EmailAccounts)
    account = accounts.find(account_id)
    if account is None:
        print(f"no email account {account_id!r} in {settings.config}")
        return 2
    bus = Bus(settings, "email-import")
    bus.start()
    blobs = blob_store_for(settings)
    outbox = Outbox(settings.data_dir / "outbox" / "email-import.sqlite3")
    publisher = Publisher(bus, outbox, "email-import", channel="email")
    publisher.start()
    await bus.wait_connected(10)
    deliverer = Deliverer.build(publisher, blobs, accounts, EmailSettings())
    imported = failed = 0
    try:
        sources: Iterator[tuple[str, bytes]]
        if path.startswith("sha256:"):
            sources = iter([(path, await blobs.get(path))])
        else:
            sources = mails_at(path)
        for name, raw in sources:
            try:
                [message] = await deliverer.deliver(
                    raw, Envelope(mail_from=None, rcpt_to=(account.address,)),
                    [Target(account)], path="import")
            except Exception as exc:
                failed += 1
                print(f"{name}: not imported: {exc}")
                continue
            imported += 1
            print(f"{name}: {message.idempotency_key} {' '.join(message.flags)}".rstrip())
        for _ in range(300):  # what only the outbox took goes out before we leave
            if not await outbox.peek(1):
                break
            await asyncio.sleep(0.1)
        left = len(await outbox.peek(10_000))
    finally:
        deliverer.pool.close()
        await publisher.stop()
        outbox.close()
        await blobs.close()
        await bus.close()
    print(f"imported {imported}, failed {failed}"
          + (f", {left} waiting in the outbox (the next import sends them)" if left else ""))
    return 0 if failed == 0 else 1


def run_status(args: argparse.Namespace) -> int:
    """`intake email status`: each mailbox's IMAP state and cursor, outbound by status."""
    import json

    from intake import StateStore

    from ..state import status_report

    async def report() -> dict[str, object]:
        settings = IntakeSettings()
        from ..channel import CHANNEL

        accounts = CHANNEL.load_accounts(load_document(settings.config))
        assert isinstance(accounts, EmailAccounts)
        async with StateStore.from_settings(settings) as store:
            return await status_report(store, [a.id for a in accounts.accounts])

    figures = asyncio.run(report())
    port = EmailSettings().port
    figures["live"] = live_figures(f"http://127.0.0.1:{port}/metrics")
    print(json.dumps(figures, indent=2, ensure_ascii=False, default=str))
    return 0


LIVE_METRICS = {  # what `status` shows from a running email service's /metrics
    "intake_email_smtp_sessions": "smtp_sessions",
    "intake_email_smtp_sessions_open": "smtp_sessions_open",
    "intake_email_smtp_replies": "smtp_replies",
    "intake_email_smtp_bytes": "smtp_bytes",
    "intake_email_messages": "mails_durable",
    "intake_email_imap_backlog": "imap_backlog",
    "intake_email_imap_lag_seconds": "imap_lag_seconds",
    "intake_email_outbound": "outbound",
}


def live_figures(url: str, timeout_s: float = 2.0) -> dict[str, object]:
    """The SMTP counters and IMAP lag of the running service (its `/metrics`), since its start.

    Counters live in the service's process: read from its endpoint, not the state store. A
    service that does not answer is said so; the rest of `status` stands without it.
    """
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            text = response.read().decode()
    except OSError as exc:
        return {"service": f"not answering at {url} ({exc.__class__.__name__})"}
    live: dict[str, object] = {"service": url}
    for family in text_string_to_metric_families(text):
        name = LIVE_METRICS.get(family.name)
        if name is None:
            continue
        values: dict[str, float] = {}
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            labels = {k: v for k, v in sample.labels.items() if k != "service"}
            key = ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "all"
            values[key] = sample.value
        live[name] = values
    return live


def dovecot_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=10143, help="IMAP port (10143)")
    parser.add_argument("--append", metavar="FILE.eml", help="append a mail to the running "
                        "Dovecot's INBOX and exit")


def run_dovecot(args: argparse.Namespace) -> int:
    """`intake email dovecot`: a throwaway local Dovecot holding the example IMAP mailbox
    `imap@shop.example` (password `imap-test-secret`), its mail under `INTAKE_DATA_DIR`."""
    import signal
    import threading

    from ..tests.dovecot import PASSWORD, USER, Dovecot, available

    settings = IntakeSettings()
    server = Dovecot(settings.data_dir.resolve() / "dovecot", args.port)
    if args.append:
        server.append(Path(args.append).read_bytes())
        print(f"appended {args.append} to {USER}'s INBOX on 127.0.0.1:{args.port}")
        return 0
    if not available():
        print("needs Dovecot (deploy/local/install-test-tools.sh) and root")
        return 2
    server.root.mkdir(parents=True, exist_ok=True)
    server.start()
    print(f"Dovecot on 127.0.0.1:{args.port}: {USER} / {PASSWORD}; Ctrl-C stops it")
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    try:
        stopped.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0
