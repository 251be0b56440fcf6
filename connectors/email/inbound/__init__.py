"""`deliver()`: the one path SMTP, IMAP and import share, from bytes to durable messages.

The raw mail goes to the blob store first, then it is parsed in a worker process (a 40 MiB
mail or a MIME bomb never runs on the event loop; a timeout or a crashed worker makes a
`parse_error` message, never a lost mail), the attachments are stored, and each message is
published (broker confirm, else the fsynced outbox). Only then does the caller answer its
source: SMTP 250, IMAP `\\Seen`. Anything that fails before raises `Transient` and nothing
half-way counts: a repeat is a no-op by its idempotency key.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from prometheus_client import Counter, Histogram

from intake import IntakeError, Message, StorageUnavailable, Transient, get_logger

from ..normalize import Envelope, MailPolicy, Parsed, to_message, unreadable_message
from ..settings import EmailAccount, EmailAccounts, EmailSettings

log = get_logger(service="email")
PARSE_ATTEMPTS = 3  # pools a mail is given when another mail's timeout or crash ends its pool
WORKER_START_TIMEOUT_S = 120.0  # a pool whose workers do not start in this long: 451, retried
PARSE_SECONDS = Histogram("intake_email_parse_seconds", "Time to parse one mail", ["service"])
PARSE_ERRORS = Counter("intake_email_parse_errors_total",
                       "Mails that could not be read, by reason", ["service", "reason"])
MAILS_IN = Counter("intake_email_messages_total", "Mails made durable, by account and path",
                   ["service", "account", "path"])


def policy_for(account: EmailAccount, accounts: EmailAccounts) -> MailPolicy:
    return MailPolicy(
        account=account.id, address=account.address, domain=account.domain,
        our_addresses=frozenset(accounts.our_addresses), our_domains=frozenset(accounts.domains),
        forwarders=frozenset(account.forwarders),
        tag_patterns=tuple(accounts.ticket_tag.patterns),
        auto_reply_subjects=tuple(accounts.auto_reply_subjects))


@dataclass(frozen=True)
class Target:
    """One of our accounts a mail is for, with the plus detail it was addressed with."""

    account: EmailAccount
    plus_detail: str | None = None


def parse_mail(raw: bytes, envelope: Envelope, targets: list[tuple[MailPolicy, str | None]],
               received_at: datetime, channel_data: dict[str, Any] | None,
               ) -> list[Parsed] | str:
    """Run in a worker: the parsed mail for each target, or the reason it cannot be read."""
    try:
        return [to_message(raw, envelope, policy, received_at, plus_detail=plus,
                           channel_data=channel_data) for policy, plus in targets]
    except RecursionError:
        return "too_deep"
    except Exception as exc:  # any damage the parser did not survive: a parse_error message
        name = type(exc).__name__
        return "too_deep" if name == "MailTooDeep" else f"parser_failed:{name}"


def worker_ready() -> bool:
    """Run once per new worker: spawning it and importing this module happen before any
    mail's time limit starts."""
    return True


class ParserPool:
    """Worker processes that parse mail, each mail with a time limit.

    A mail over its time is cut off by ending the pool's processes (a process pool cannot
    cancel one task) and starting a new pool; so is a crashed worker. The other mails the
    ended pool was parsing are parsed again on the new one (up to `PARSE_ATTEMPTS` pools), so
    a MIME bomb costs them time, never a `451` or a `parse_error`; a mail that breaks every
    pool it is given is `worker_crashed`. At most one mail per worker is in the pool, the rest
    wait here: a mail's time limit counts its parse, not its wait behind a flood. `workers=0`
    parses in a thread instead (tests, tiny deployments).
    """

    def __init__(self, workers: int, timeout_s: float) -> None:
        self.workers = workers
        self.timeout_s = timeout_s
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._slots = asyncio.Semaphore(max(1, workers))  # one mail per worker at a time
        self._warming: tuple[concurrent.futures.ProcessPoolExecutor,
                             asyncio.Future[Any]] | None = None

    def _executor(self) -> concurrent.futures.ProcessPoolExecutor:
        if self._pool is None:
            self._pool = concurrent.futures.ProcessPoolExecutor(
                self.workers, mp_context=multiprocessing.get_context("spawn"))
        return self._pool

    async def parse(self, *args: Any) -> list[Parsed] | str:
        started = time.perf_counter()
        try:
            if self.workers == 0:
                async with asyncio.timeout(self.timeout_s):
                    return await asyncio.to_thread(parse_mail, *args)
            for _attempt in range(PARSE_ATTEMPTS):
                async with self._slots:  # waiting for a worker is not part of the time limit
                    pool = await self._started()
                    try:
                        future = asyncio.get_running_loop().run_in_executor(
                            pool, parse_mail, *args)
                        return await asyncio.wait_for(future, self.timeout_s)
                    except TimeoutError:
                        self._restart(pool)
                        return "timeout"
                    except BrokenProcessPool:
                        self._restart(pool)  # a worker died: this mail's doing, or another's
                    except asyncio.CancelledError:
                        task = asyncio.current_task()
                        if task is not None and task.cancelling():
                            raise
                        # Not ours: another mail's timeout shut the pool down under this one.
                    except RuntimeError:
                        if self._pool is pool:
                            raise
                        # The pool was shut down (another mail's timeout) before this was in.
            return "worker_crashed"
        except TimeoutError:
            return "timeout"
        finally:
            PARSE_SECONDS.labels("email").observe(time.perf_counter() - started)

    async def _started(self) -> concurrent.futures.ProcessPoolExecutor:
        """The pool, its workers started and this module imported in them.

        Spawning workers takes seconds on a busy machine; a mail's time limit counts its
        parse, not that, or the mails waiting behind a bomb would time out on the new pool.
        """
        pool = self._executor()
        if self._warming is None or self._warming[0] is not pool:
            loop = asyncio.get_running_loop()
            warming = asyncio.gather(*(loop.run_in_executor(pool, worker_ready)
                                       for _ in range(self.workers)), return_exceptions=True)
            self._warming = (pool, warming)
        try:
            await asyncio.wait_for(asyncio.shield(self._warming[1]), WORKER_START_TIMEOUT_S)
        except TimeoutError:
            self._restart(pool)
            raise Transient("the parser workers did not start") from None
        return pool

    def _restart(self, pool: concurrent.futures.ProcessPoolExecutor) -> None:
        if self._pool is pool:
            self._pool = None
        for process in list((getattr(pool, "_processes", None) or {}).values()):
            process.kill()
        pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        if self._pool is not None:
            self._restart(self._pool)


BounceHook = Callable[[str, list[str]], Awaitable[None]]


@dataclass
class Deliverer:
    """What `deliver` needs: the edge's publisher and blob store, the accounts, the pool."""

    publisher: Any
    blobs: Any
    accounts: EmailAccounts
    settings: EmailSettings
    pool: ParserPool
    on_permanent_failure: BounceHook | None = None
    now: Callable[[], datetime] = field(default=lambda: datetime.now().astimezone())

    @classmethod
    def build(cls, publisher: Any, blobs: Any, accounts: EmailAccounts,
              settings: EmailSettings) -> Deliverer:
        return cls(publisher, blobs, accounts, settings,
                   ParserPool(settings.parse_workers, settings.parse_timeout_s))

    async def deliver(self, raw: bytes, envelope: Envelope, targets: Sequence[Target], *,
                      path: str = "smtp", channel_data: dict[str, Any] | None = None,
                      oversize_note: str | None = None) -> list[Message]:
        """Make `raw` durable as one message per target; raises `Transient` otherwise.

        `oversize_note`: `raw` is only the headers of a mail too big to take (IMAP leaves it
        in the mailbox); each message is flagged `oversize` and its text says where it is.
        """
        from datetime import UTC
        received_at = datetime.now(UTC)
        try:
            await self.blobs.put(raw)
        except IntakeError:
            raise
        except Exception as exc:
            raise StorageUnavailable(f"the raw mail could not be stored: {exc!r}") from exc
        policies = [(policy_for(t.account, self.accounts), t.plus_detail) for t in targets]
        result = await self.pool.parse(raw, envelope, policies, received_at, channel_data)
        if isinstance(result, str):
            PARSE_ERRORS.labels("email", result.split(":", 1)[0]).inc()
            log.warning("mail_unreadable", reason=result, size=len(raw))
            parsed = [Parsed(unreadable_message(raw, envelope, policy, received_at, result,
                                                plus_detail=plus, channel_data=channel_data))
                      for policy, plus in policies]
        else:
            parsed = result
        try:
            for item in parsed[:1]:  # every target shares the attachments
                for data in item.blobs:
                    await self.blobs.put(data)
        except IntakeError:
            raise
        except Exception as exc:
            raise StorageUnavailable(f"an attachment could not be stored: {exc!r}") from exc
        for item in parsed:
            if oversize_note is not None:
                item.message.flags = [*item.message.flags, "oversize"]
                item.message.text = oversize_note
            await self.publisher.publish(item.message)
            MAILS_IN.labels("email", item.message.account, path).inc()
            log.info("mail_received", idempotency_key=item.message.idempotency_key,
                     account=item.message.account, path=path, flags=item.message.flags)
        if self.on_permanent_failure is not None:
            for item in parsed:
                if item.permanent_failures:
                    await self.on_permanent_failure(item.message.account,
                                                    item.permanent_failures)
        return [item.message for item in parsed]


__all__ = ["Deliverer", "ParserPool", "Target", "Transient", "parse_mail", "policy_for"]
