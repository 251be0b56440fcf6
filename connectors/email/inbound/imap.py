"""IMAP intake (imapclient, a thread per mailbox): the pull path for hosted mailboxes.

Per mailbox and folder the state store keeps UIDVALIDITY and the highest UID made durable; new
mail is `UID last+1:*` (filtered: `n:*` always returns the last message, even below n), fetched
in UID order with `BODY.PEEK[]`. Per message: durable (the shared `deliver()`), then `\\Seen` or
moved, then the cursor. The cursor decides what is new, never `\\Seen`: mail read in webmail
first is still imported, mail marked unread again is not imported twice. A changed UIDVALIDITY
rescans the folder (the idempotency keys keep what was imported from being stored twice). IDLE
when offered, re-issued every 29 minutes (RFC 2177), else polling; reconnects with backoff and
jitter (1 s to 5 min), an authentication failure shown distinctly and retried slowly.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Awaitable
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

import imapclient
from aiohttp import web
from imapclient.exceptions import LoginError
from prometheus_client import Counter, Gauge

from intake import Task, get_logger, run_in_thread

from ..client import TokenRefused, TokenSource, token_namespace
from ..normalize import Envelope
from ..settings import EmailAccount, EmailAccounts
from ..state import status_namespace
from . import Deliverer, Target

log = get_logger(service="email", component="imap")
IMAP_STATE = Gauge("intake_email_imap_up", "1 while a mailbox is in this state",
                   ["service", "account", "state"])
IMAP_LAST_UID = Gauge("intake_email_imap_last_uid", "Highest UID made durable",
                      ["service", "account"])
IMAP_RECONNECTS = Counter("intake_email_imap_reconnects_total", "IMAP reconnects",
                          ["service", "account"])
IMAP_BACKLOG = Gauge("intake_email_imap_backlog", "Mails found in the folder, not yet durable",
                     ["service", "account"])
IMAP_LAG = Gauge("intake_email_imap_lag_seconds",
                 "Age (INTERNALDATE) of the oldest mail found and not yet durable; 0 caught up",
                 ["service", "account"])
STATES = ("connecting", "idle", "polling", "importing", "auth_error", "error")
IDLE_REISSUE_S = 29 * 60
BACKOFF_S = (1.0, 300.0)
AUTH_RETRY_S = 300.0
# What `intake email status` and /readyz's details show, per account.
STATUS: dict[str, dict[str, Any]] = {}
T = TypeVar("T")


class MailboxPoller:
    """One mailbox's loop, run in its own thread; `stop` ends it between blocking calls."""

    def __init__(self, account: EmailAccount, deliverer: Deliverer, cursors: Any,
                 loop: asyncio.AbstractEventLoop, stop: threading.Event,
                 status_store: Any = None, tokens: TokenSource | None = None) -> None:
        assert account.imap is not None
        self.account = account
        self.mailbox = account.imap
        self.deliverer = deliverer
        self.cursors = cursors
        self.loop = loop
        self.stop = stop
        self.status = STATUS.setdefault(account.id, {"state": "connecting", "last_error": None})
        self.client: imapclient.IMAPClient | None = None
        self.status_store = status_store
        oauth = account.imap.oauth2
        if tokens is None and account.imap.auth == "xoauth2" and oauth is not None:
            tokens = TokenSource(f"{account.id}:imap", oauth)
        self.tokens = tokens  # XOAUTH2's access tokens (None: password login)

    # -- the loop --------------------------------------------------------------------------

    def run(self) -> None:
        failures = 0
        while not self.stop.is_set():
            try:
                self.session()
                failures = 0
            except (LoginError, TokenRefused) as exc:
                if self.tokens is not None:
                    self.tokens.forget()  # a refused token is not offered again
                self._state("auth_error", str(exc)[:300])
                self._wait(AUTH_RETRY_S)
            except Exception as exc:  # the server went away, a timeout, a protocol error
                failures += 1
                self._state("error", repr(exc)[:300])
                IMAP_RECONNECTS.labels("email", self.account.id).inc()
                low, high = BACKOFF_S
                self._wait(min(high, low * 2 ** min(failures, 10)) * random.uniform(0.5, 1.0))
            finally:
                self._close()

    def session(self) -> None:
        self._state("connecting", None)
        mailbox = self.mailbox
        client = imapclient.IMAPClient(mailbox.host, mailbox.port, ssl=mailbox.security == "tls",
                                       timeout=30)
        self.client = client
        if mailbox.security == "starttls":
            client.starttls()
        if self.tokens is not None:
            client.oauth2_login(mailbox.username, self._call(self.tokens.access_token()))
        else:
            client.login(mailbox.username,
                         mailbox.password.get_secret_value() if mailbox.password else "")
        selected = client.select_folder(mailbox.folder)
        uidvalidity = int(selected[b"UIDVALIDITY"])
        self.status.update({"uidvalidity": uidvalidity, "connected": True})
        last_uid = self._start(client, uidvalidity)
        idle = mailbox.idle and b"IDLE" in client.capabilities()
        while not self.stop.is_set():
            last_uid = self.import_new(client, uidvalidity, last_uid)
            if idle:
                self._idle(client)
            else:
                self._state("polling", None)
                self._wait(mailbox.poll_seconds)
                client.noop()

    def _start(self, client: imapclient.IMAPClient, uidvalidity: int) -> int:
        cursor = self._call(self.cursors.get(self.mailbox.folder))
        if isinstance(cursor, dict) and cursor.get("uidvalidity") == uidvalidity:
            return int(cursor["last_uid"])
        if isinstance(cursor, dict):
            log.warning("imap_uidvalidity_changed", account=self.account.id,
                        was=cursor.get("uidvalidity"), now=uidvalidity)
            return 0  # rescan: the keys keep what was imported from being stored twice
        since = start_date(self.mailbox.start_from)
        if since is None:
            return 0
        uids = sorted(client.search(["SINCE", since]))
        log.info("imap_first_import", account=self.account.id, since=str(since),
                 messages=len(uids))
        return (uids[0] - 1) if uids else max(0, int(
            client.folder_status(self.mailbox.folder, ["UIDNEXT"])[b"UIDNEXT"]) - 1)

    def import_new(self, client: imapclient.IMAPClient, uidvalidity: int, last_uid: int) -> int:
        uids = sorted(u for u in client.search(["UID", f"{last_uid + 1}:*"]) if u > last_uid)
        self._backlog(len(uids))
        if uids:
            self._state("importing", None)
            oldest = client.fetch(uids[:1], ["INTERNALDATE"]).get(uids[0]) or {}
            self._lag(oldest.get(b"INTERNALDATE"))
        batch_size = self.mailbox.batch_size
        for start in range(0, len(uids), batch_size):
            batch = uids[start:start + batch_size]
            sizes = client.fetch(batch, ["RFC822.SIZE", "INTERNALDATE"])
            for uid in batch:
                if self.stop.is_set():
                    return last_uid
                self._lag((sizes.get(uid) or {}).get(b"INTERNALDATE"))
                if uid not in sizes:
                    log.info("imap_message_gone", account=self.account.id, uid=uid)
                    last_uid = self._advance(uid, uidvalidity)
                    continue
                size = int(sizes[uid].get(b"RFC822.SIZE", 0))
                if size > self.deliverer.settings.max_message_bytes:
                    self._oversize(client, uid, uidvalidity, size)
                    last_uid = self._advance(uid, uidvalidity)  # left in place, not moved
                    continue
                fetched = client.fetch([uid], ["BODY.PEEK[]"]).get(uid)
                raw = fetched.get(b"BODY[]") if fetched else None
                if raw is None:  # expunged between SEARCH and FETCH (Zammad #1662)
                    log.info("imap_message_gone", account=self.account.id, uid=uid)
                    last_uid = self._advance(uid, uidvalidity)
                    continue
                self._deliver(bytes(raw), uid, uidvalidity)
                self._after_intake(client, uid)
                last_uid = self._advance(uid, uidvalidity)
                self._backlog(max(0, int(self.status.get("backlog", 1)) - 1))
        self._lag(None)  # caught up with what the search found
        return last_uid

    def _backlog(self, count: int) -> None:
        self.status["backlog"] = count
        IMAP_BACKLOG.labels("email", self.account.id).set(count)

    def _lag(self, internal_date: Any) -> None:
        """The lag metric from the oldest pending mail's INTERNALDATE (None: nothing pending).

        imapclient gives a naive local time (or an aware one): `timestamp()` reads both right.
        """
        lag = max(0.0, time.time() - internal_date.timestamp()) if isinstance(
            internal_date, datetime) else 0.0
        self.status["lag_s"] = round(lag, 1)
        IMAP_LAG.labels("email", self.account.id).set(lag)

    def _deliver(self, raw: bytes, uid: int, uidvalidity: int) -> None:
        envelope = Envelope(mail_from=None, rcpt_to=(self.account.address,))
        self._call(self.deliverer.deliver(
            raw, envelope, [Target(self.account)], path="imap",
            channel_data={"imap": {"folder": self.mailbox.folder, "uidvalidity": uidvalidity,
                                   "uid": uid}}))

    def _oversize(self, client: imapclient.IMAPClient, uid: int, uidvalidity: int,
                  size: int) -> None:
        """A mail over the size limit: its headers published, flagged `oversize`."""
        fetched = client.fetch([uid], ["BODY.PEEK[HEADER]"]).get(uid) or {}
        headers = bytes(fetched.get(b"BODY[HEADER]") or b"")
        note = (f"This mail is {size} bytes, over the limit of "
                f"{self.deliverer.settings.max_message_bytes}; it was left in the mailbox "
                f"{self.account.address}, folder {self.mailbox.folder} (UID {uid}).")
        log.warning("imap_message_oversize", account=self.account.id, uid=uid, size=size)
        envelope = Envelope(mail_from=None, rcpt_to=(self.account.address,))
        self._call(self.deliverer.deliver(
            headers, envelope, [Target(self.account)], path="imap", oversize_note=note,
            channel_data={"imap": {"folder": self.mailbox.folder, "uidvalidity": uidvalidity,
                                   "uid": uid, "size": size}}))

    def _after_intake(self, client: imapclient.IMAPClient, uid: int) -> None:
        if self.mailbox.after_intake == "seen":
            client.add_flags([uid], [imapclient.SEEN])
        elif self.mailbox.after_intake == "move" and self.mailbox.move_to:
            if b"MOVE" in client.capabilities():
                client.move([uid], self.mailbox.move_to)
            else:
                client.copy([uid], self.mailbox.move_to)
                client.add_flags([uid], [imapclient.DELETED])
                client.uid_expunge([uid])

    def _advance(self, uid: int, uidvalidity: int) -> int:
        self._call(self.cursors.put(self.mailbox.folder,
                                    {"uidvalidity": uidvalidity, "last_uid": uid}))
        self.status["last_uid"] = uid
        IMAP_LAST_UID.labels("email", self.account.id).set(uid)
        return uid

    def _idle(self, client: imapclient.IMAPClient) -> None:
        self._state("idle", None)
        client.idle()
        started = time.monotonic()
        try:
            while not self.stop.is_set() and time.monotonic() - started < IDLE_REISSUE_S:
                responses = client.idle_check(timeout=0.5)
                if any(r[1] in (b"EXISTS", b"RECENT") for r in responses if len(r) > 1):
                    return
        finally:
            client.idle_done()

    # -- helpers ---------------------------------------------------------------------------

    def _call(self, work: Awaitable[T]) -> T:
        """Run a coroutine on the service's loop and wait for it (the mail made durable)."""
        return asyncio.run_coroutine_threadsafe(work, self.loop).result()  # type: ignore[arg-type]

    def _wait(self, seconds: float) -> None:
        self.stop.wait(seconds)

    def _state(self, state: str, error: str | None) -> None:
        changed = self.status.get("state") != state
        if changed:
            log.info("imap_state_changed", account=self.account.id, state=state, error=error)
        self.status["state"] = state
        if error is not None:
            self.status["last_error"] = error
        self.status["connected"] = state not in ("connecting", "auth_error", "error")
        for name in STATES:
            IMAP_STATE.labels("email", self.account.id, name).set(1 if name == state else 0)
        if changed and self.status_store is not None:
            # For `intake email status`, another process: the state as of its last change.
            try:
                self._call(self.status_store.put(self.account.id, {
                    **self.status, "at": time.time()}))
            except Exception:
                log.warning("imap_status_unsaved", account=self.account.id)

    def _close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            try:
                client.logout()
            except Exception:
                try:
                    client.shutdown()
                except Exception:
                    pass


def start_date(start_from: str, today: date | None = None) -> date | None:
    """`7d` → a week ago, `2026-01-31` → that day, `all` → None (everything)."""
    if start_from == "all":
        return None
    today = today or datetime.now(UTC).date()
    if start_from.endswith("d"):
        return today - timedelta(days=int(start_from[:-1]))
    return date.fromisoformat(start_from)


def mailboxes(accounts: EmailAccounts) -> list[EmailAccount]:
    return [a for a in accounts.accounts if a.imap is not None]


async def run_mailboxes(app: web.Application) -> None:
    """The `imap` task: one thread per mailbox, until the service stops."""
    from .smtp import EMAIL_STATE, deliverer_of

    deliverer = deliverer_of(app)
    state = app[EMAIL_STATE]
    loop = asyncio.get_running_loop()
    works = []
    for account in mailboxes(deliverer.accounts):
        def work(_app: web.Application, stop: threading.Event,
                 account: EmailAccount = account) -> None:
            imap = account.imap
            tokens = TokenSource(f"{account.id}:imap", imap.oauth2, token_namespace(
                state.store)) if imap is not None and imap.auth == "xoauth2" and imap.oauth2 \
                else None
            MailboxPoller(account, deliverer, state.cursors(account.id), loop, stop,
                          status_namespace(state.store), tokens).run()
        work.__name__ = f"imap_{account.id}"
        works.append(run_in_thread(work)(app))
    if not works:
        await asyncio.Event().wait()
    await asyncio.gather(*works)




# Not critical: an unreachable IMAP server turns its mailbox red in `intake email status`,
# never the service unready (a healthy SMTP listener must not be restarted for it).
TASK = Task(name="imap", run=run_mailboxes, critical=False)
