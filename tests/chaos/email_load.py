"""Mail over SMTP as the chaos load, and the email scenario (tests/chaos/README.md).

`EmailLoadDriver` plays sending MTAs: each submission is one mail from a sender of its own (one
ticket each) to `support@shop.example` on the email service's SMTP listener, retried with the
same bytes (the same Message-ID) after a refused connection, a dropped session or a 4xx, as
Postfix retries its queue, and counted accepted only on `250`. A 5xx ends the submission (an
MTA would bounce it): it is not accepted, so the quick test's `accepted == count` catches it.
The mail's text carries the run's content marker, so `check` finds duplicates by content;
its idempotency key is computed by the connector's own `to_message`, so "lost" is exact.

The email service gets a copy of the example config whose IMAP mailbox and outbound relay
point at closed ports: the IMAP mailbox stays red and harmless, the acknowledgements wait in
the sender's retry queue and never leave the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import aiosmtplib

from connectors.email import CHANNEL
from connectors.email.inbound import policy_for
from connectors.email.normalize import Envelope, to_message
from connectors.email.settings import EmailAccounts
from intake import load_document

from .harness import REPO, SERVICES, Gateway, LoadDriver, Submission, free_port
from .scenarios import Lab, Result, Run, _background

SERVICE = "email"
ACCOUNT = "support@shop.example"
EXAMPLE = REPO / "deploy" / "intake.example.yaml"


def chaos_config(workdir: Path) -> Path:
    """The example config with the IMAP mailbox and the relay on closed ports."""
    text = EXAMPLE.read_text()
    # Ports 1 and 2 (tcpmux, compressnet) have no listener: a free port picked now could be
    # given to one of the gateway's services a moment later, and the IMAP client would then
    # wait 30 s for a greeting from an HTTP server.
    for port, closed in (("port: 10143", "port: 1"), ("port: 2526", "port: 2")):
        assert port in text, f"the example config changed: {port} not found"
        text = text.replace(port, closed)
    path = workdir / "intake.chaos.yaml"
    path.write_text(text)
    return path


class EmailLoadDriver(LoadDriver):
    def __init__(self, *args: object, smtp_port: int, config: Path, **kwargs: object) -> None:
        super().__init__(*args, concurrency=8, **kwargs)  # type: ignore[arg-type]
        self.smtp_port = smtp_port
        accounts = CHANNEL.load_accounts(load_document(config))
        assert isinstance(accounts, EmailAccounts)
        account = accounts.find(ACCOUNT)
        assert account is not None
        self.policy = policy_for(account, accounts)
        self.keys: dict[str, str] = {}  # header key -> the message's idempotency key

    def message_key(self, header_key: str) -> str:
        # `check` asks for the run's keys as a LIKE pattern (`<run>-%`), then compares exactly.
        return self.keys.get(header_key, f"email:{ACCOUNT}:<{header_key}@chaos.example>:%")

    def raw(self, index: int) -> tuple[str, bytes]:
        key = self.header_key(index)
        sender = f"c{index}.{self.run_id}@chaos.example"
        raw = (f"From: Chaos {index} <{sender}>\r\nTo: {ACCOUNT}\r\n"
               f"Subject: chaos {index}\r\nMessage-ID: <{key}@chaos.example>\r\n"
               f"Date: Sat, 05 Dec 2026 10:00:00 +0800\r\nMIME-Version: 1.0\r\n"
               f"Content-Type: text/plain; charset=utf-8\r\n\r\n"
               f"chaos submission {index} of run {self.run_id}\r\n").encode()
        return sender, raw

    async def submit(self, http: aiohttp.ClientSession, index: int) -> None:
        key = self.header_key(index)
        sender, raw = self.raw(index)
        parsed = to_message(raw, Envelope(mail_from=sender, rcpt_to=(ACCOUNT,)), self.policy,
                            datetime.now(UTC))
        self.keys[key] = parsed.message.idempotency_key
        sub = Submission(key=key, started=time.time())
        self.submissions[key] = sub
        self.sent += 1
        pause = 0.05
        while time.time() - sub.started < self.give_up_s:
            await self.paused.wait()
            sub.attempts += 1
            try:
                _refused, answer = await aiosmtplib.send(
                    raw, sender=sender, recipients=[ACCOUNT], hostname="127.0.0.1",
                    port=self.smtp_port, timeout=30)
                status = int(answer.split(" ", 1)[0]) if answer[:3].isdigit() else 250
            except aiosmtplib.SMTPResponseException as exc:
                status = exc.code
            except aiosmtplib.SMTPRecipientsRefused as exc:
                status = exc.recipients[0].code
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                self.errors[exc.__class__.__name__] += 1
                status = 0
            self.statuses[status] += 1
            sub.statuses.append(status)
            if status == 250:
                sub.accepted_at = time.time()
                self.accepted_count += 1
                self._progress.set()
                return
            if status >= 500:
                return  # an MTA bounces it: never accepted
            await asyncio.sleep(pause + random.random() * pause)
            pause = min(pause * 2, 1.0)


@contextlib.asynccontextmanager
async def email_scenario(lab: Lab, name: str, env: dict[str, str]) -> AsyncIterator[Run]:
    """`scenarios.scenario` with the email service and its settings (`Gateway`'s `env`)."""
    run_id = f"{name[:10]}{uuid.uuid4().hex[:6]}"
    database_url = await lab.postgres.create_database(f"chaos_{run_id}")
    workdir = lab.workdir / run_id
    workdir.mkdir(parents=True)
    gateway = Gateway(workdir, lab.rabbit.url, database_url, prefix=f"chaos{run_id}",
                      services=(*SERVICES, SERVICE), env=env)
    async with aiohttp.ClientSession() as http:
        await gateway.start(http)
        run = Run(lab, name, gateway, database_url, http, run_id)
        try:
            yield run
        finally:
            print(f"   stopped in {await gateway.stop()}", flush=True)


def email_env(lab: Lab) -> tuple[dict[str, str], int, Path]:
    """The email service's settings for a scenario: (env, SMTP port, config)."""
    smtp_port = free_port()
    config = chaos_config(lab.workdir)
    env = {"INTAKE_CONFIG": str(config), "INTAKE_EMAIL_SMTP_PORT": str(smtp_port),
           "INTAKE_EMAIL_PARSE_WORKERS": "1", "INTAKE_EMAIL_MAX_SESSIONS_PER_CLIENT": "1000"}
    return env, smtp_port, config


async def email_service_kills(lab: Lab, count: int, *, kills: int = 3,
                              broker_restarts: int = 1, down_s: float = 1.0) -> Result:
    """Mail over SMTP while the email service is SIGKILLed and the broker restarted: every
    mail answered `250` is stored once, and none is stored twice."""
    env, smtp_port, config = email_env(lab)
    async with email_scenario(lab, "email_service_kills", env) as run:
        run.gateway.supervise(run.http)
        driver = EmailLoadDriver(run.gateway, run.run_id, count, rate=lab.rate,
                                 smtp_port=smtp_port, config=config)
        load = _background(driver.run(run.http))
        faults = ["kill"] * kills + ["broker"] * broker_restarts
        random.Random(count).shuffle(faults)
        rng = random.Random(count + 1)
        for i, fault in enumerate(faults):
            await driver.reached((i + 1) / (len(faults) + 1))
            await asyncio.sleep(rng.random() * 0.3)
            if fault == "kill":
                service = run.gateway[SERVICE]
                if service.proc is not None:
                    service.proc.kill()  # the supervisor restarts it
                    run.gateway.crashes[SERVICE] -= 1  # a kill, not a crash
                    run.fault(f"SIGKILL {SERVICE}")
            else:
                await asyncio.to_thread(lab.rabbit.kill)
                run.fault("broker kill -9")
                await asyncio.sleep(down_s)
                await asyncio.to_thread(lab.rabbit.start)
                run.fault("broker back")
        await load
        result = await run.finish(driver, f"mail over SMTP, the email service SIGKILLed {kills}"
                                          f" times, the broker restarted {broker_restarts}")
        result.notes["smtp_errors"] = dict(driver.errors)
        return result


async def email_broker_outage(lab: Lab, count: int, *, down_s: float = 10.0) -> Result:
    """The broker down under mail: `250` from the email service's fsynced outbox meanwhile (no
    `451`: the outbox is writable), every mail stored once when it is back."""
    env, smtp_port, config = email_env(lab)
    async with email_scenario(lab, "email_broker_outage", env) as run:
        run.gateway.supervise(run.http)
        driver = EmailLoadDriver(run.gateway, run.run_id, count, rate=lab.rate,
                                 smtp_port=smtp_port, config=config)
        load = _background(driver.run(run.http))
        await driver.reached(0.25)
        before = Counter(driver.statuses)
        await asyncio.to_thread(lab.rabbit.stop)
        run.fault("broker stopped")
        await asyncio.sleep(down_s)
        during = Counter(driver.statuses) - before
        await asyncio.to_thread(lab.rabbit.start)
        run.fault("broker back")
        await load
        result = await run.finish(driver, f"mail over SMTP, the broker down for {down_s:.0f} s")
        result.notes.update({"statuses_while_down": dict(during),
                             "smtp_errors": dict(driver.errors)})
        if not during.get(250):
            result.problems.append("no mail was answered 250 while the broker was down")
        refused = {code: n for code, n in during.items() if code != 250}
        if refused:
            result.problems.append(f"answers other than 250 while the broker was down: {refused}")
        return result


async def email_postgres_restart(lab: Lab, count: int, *, down_s: float = 5.0) -> Result:
    """PostgreSQL stopped (fast, then kill -9) under mail: the listener keeps answering `250`
    (it needs the broker, not the database) and the ticket core stores every mail once."""
    env, smtp_port, config = email_env(lab)
    async with email_scenario(lab, "email_postgres_restart", env) as run:
        run.gateway.supervise(run.http)
        core = run.gateway["ticket-core"]
        driver = EmailLoadDriver(run.gateway, run.run_id, count, rate=lab.rate,
                                 smtp_port=smtp_port, config=config)
        load = _background(driver.run(run.http))
        refused: Counter[int] = Counter()
        for i, how in enumerate(("fast stop", "kill -9")):
            await driver.reached((i + 1) / 3)
            before = Counter(driver.statuses)
            await asyncio.to_thread(lab.postgres.stop if i == 0 else lab.postgres.kill)
            run.fault(f"PostgreSQL {how}")
            await asyncio.sleep(down_s)
            refused += Counter({code: n for code, n in (Counter(driver.statuses) - before)
                                .items() if code != 250})
            await asyncio.to_thread(lab.postgres.start)
            run.fault("PostgreSQL back")
            for _ in range(80):  # the next fault once the ticket core is ready again
                if await core.readyz(run.http) == 200:
                    break
                await asyncio.sleep(0.25)
        await load
        result = await run.finish(driver, "mail over SMTP, PostgreSQL restarted twice "
                                          "(fast stop, kill -9)")
        result.notes["smtp_errors"] = dict(driver.errors)
        if refused:
            result.problems.append(f"answers other than 250 while the database was down: "
                                   f"{dict(refused)}")
        if result.notes["crash_restarts"].get("ticket-core"):
            result.problems.append("the ticket core exited while the database was down")
        return result
