"""IMAP intake against a real Dovecot of the test's own (see dovecot.py)."""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import imapclient
import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr

from connectors.email.inbound import Deliverer, ParserPool
from connectors.email.inbound.imap import STATUS, MailboxPoller
from connectors.email.settings import EmailAccount, EmailAccounts, EmailSettings, ImapMailbox
from connectors.email.state import EmailState
from intake import StateStore
from intake.testing import MemoryBlobStore, RecordingPublisher

from .dovecot import PASSWORD, USER, Dovecot, available

pytestmark = pytest.mark.skipif(not available(), reason="needs Dovecot and root "
                                "(deploy/local/install-test-tools.sh)")


def mail(n: int) -> bytes:
    return (f"From: Li <li@example.cn>\r\nTo: {USER}\r\nSubject: mail {n}\r\n"
            f"Message-ID: <m{n}@example.cn>\r\nDate: Sat, 05 Dec 2026 10:00:00 +0800\r\n\r\n"
            f"body {n}\r\n").encode()


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    server = Dovecot.create().start()
    yield server
    server.cleanup()


def account(port: int, password: str = PASSWORD) -> EmailAccount:
    return EmailAccount(id=USER, address=USER, smtp_in=False, imap=ImapMailbox(
        host="127.0.0.1", port=port, security="none", username=USER,
        password=SecretStr(password), start_from="all", poll_seconds=0.2))


class Intake:
    """The pollers of one 'service life': start, wait for messages, stop."""

    def __init__(self, store: StateStore, publisher: RecordingPublisher) -> None:
        self.store = store
        self.publisher = publisher
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    async def start(self, acct: EmailAccount, **settings: Any) -> None:
        deliverer = Deliverer(self.publisher, MemoryBlobStore(), EmailAccounts(accounts=[acct]),
                              EmailSettings(**settings), ParserPool(0, 30.0))
        poller = MailboxPoller(acct, deliverer, EmailState(self.store).cursors(acct.id),
                               asyncio.get_running_loop(), self.stop)
        self.thread = threading.Thread(target=poller.run, daemon=True)
        self.thread.start()

    async def until(self, count: int, timeout: float = 10.0) -> list[Any]:
        for _ in range(int(timeout / 0.05)):
            if len(self.publisher.messages) >= count:
                return list(self.publisher.messages)
            await asyncio.sleep(0.05)
        raise AssertionError(f"{len(self.publisher.messages)} messages, wanted {count}")

    async def close(self) -> None:
        self.stop.set()
        if self.thread is not None:
            await asyncio.to_thread(self.thread.join, 10)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[StateStore]:
    async with StateStore(f"sqlite+aiosqlite:///{tmp_path / 'state.sqlite3'}") as opened:
        yield opened


def seen_flags(dovecot: Dovecot) -> dict[int, bool]:
    with imapclient.IMAPClient("127.0.0.1", dovecot.port, ssl=False) as client:
        client.login(USER, PASSWORD)
        client.select_folder("INBOX", readonly=True)
        flags = client.get_flags(client.search("ALL"))
    return {uid: imapclient.SEEN in f for uid, f in flags.items()}


async def test_backlog_then_idle_pickup_marks_seen_and_moves_the_cursor(
        dovecot: Dovecot, store: StateStore) -> None:
    for n in (1, 2):
        dovecot.append(mail(n))
    intake = Intake(store, RecordingPublisher())
    await intake.start(account(dovecot.port))
    try:
        first = await intake.until(2)
        assert [m.subject for m in first] == ["mail 1", "mail 2"]
        assert first[0].channel_data["imap"]["uid"] == 1
        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.to_thread(dovecot.append, mail(3))
        third = (await intake.until(3, timeout=5))[2]
        assert third.subject == "mail 3"
        assert loop.time() - started < 3.0  # IDLE, not a poll interval
        assert STATUS[USER]["state"] == "idle" or STATUS[USER]["state"] == "importing"
    finally:
        await intake.close()
    assert seen_flags(dovecot) == {1: True, 2: True, 3: True}
    assert (await EmailState(store).cursors(USER).get("INBOX"))["last_uid"] == 3


async def test_a_restart_imports_exactly_the_new_mail_once_and_unread_again_is_not_new(
        dovecot: Dovecot, store: StateStore) -> None:
    dovecot.append(mail(1))
    publisher = RecordingPublisher()
    intake = Intake(store, publisher)
    await intake.start(account(dovecot.port))
    await intake.until(1)
    await intake.close()
    # Offline: a person marks the mail unread again, and new mail arrives.
    with imapclient.IMAPClient("127.0.0.1", dovecot.port, ssl=False) as client:
        client.login(USER, PASSWORD)
        client.select_folder("INBOX")
        client.remove_flags([1], [imapclient.SEEN])
    dovecot.append(mail(2))
    again = Intake(store, publisher)
    await again.start(account(dovecot.port))
    try:
        messages = await again.until(2)
        await asyncio.sleep(0.5)
        assert [m.subject for m in publisher.messages] == ["mail 1", "mail 2"]
        assert len(messages) == 2
    finally:
        await again.close()


async def test_a_changed_uidvalidity_rescans_with_the_same_keys(
        dovecot: Dovecot, store: StateStore) -> None:
    dovecot.append(mail(1))
    publisher = RecordingPublisher()
    intake = Intake(store, publisher)
    await intake.start(account(dovecot.port))
    await intake.until(1)
    await intake.close()
    dovecot.stop()
    dovecot.forget_uids()
    dovecot.start()
    again = Intake(store, publisher)
    await again.start(account(dovecot.port))
    try:
        messages = await again.until(2)
        assert messages[0].idempotency_key == messages[1].idempotency_key
    finally:
        await again.close()


async def test_a_wrong_password_shows_as_auth_error(dovecot: Dovecot, store: StateStore) -> None:
    STATUS.pop(USER, None)
    intake = Intake(store, RecordingPublisher())
    await intake.start(account(dovecot.port, password="wrong"))
    try:
        for _ in range(100):
            if STATUS.get(USER, {}).get("state") == "auth_error":
                break
            await asyncio.sleep(0.05)
        assert STATUS[USER]["state"] == "auth_error"
        assert STATUS[USER]["last_error"]
    finally:
        await intake.close()


async def test_a_mail_over_the_size_limit_is_published_as_headers_and_left_unseen(
        dovecot: Dovecot, store: StateStore) -> None:
    dovecot.append(mail(1).replace(b"body 1", b"x" * 3000))
    dovecot.append(mail(2))
    intake = Intake(store, RecordingPublisher())
    await intake.start(account(dovecot.port), max_message_bytes=2048)
    try:
        big, small = await intake.until(2)
    finally:
        await intake.close()
    assert big.flags == ["oversize"] and big.subject == "mail 1"
    assert "over the limit" in big.text and "UID 1" in big.text
    assert big.channel_data["imap"]["size"] > 2048
    assert small.flags == [] and small.text == "body 2"
    assert seen_flags(dovecot) == {1: False, 2: True}


async def test_without_idle_the_mailbox_is_polled(store: StateStore) -> None:
    server = Dovecot.create(capability="IMAP4rev1 LITERAL+ UIDPLUS MOVE").start()
    try:
        STATUS.pop(USER, None)
        intake = Intake(store, RecordingPublisher())
        await intake.start(account(server.port))
        try:
            await asyncio.to_thread(server.append, mail(1))
            [message] = await intake.until(1, timeout=5)
            assert message.subject == "mail 1"
            assert STATUS[USER]["state"] in ("polling", "importing")
        finally:
            await intake.close()
    finally:
        server.cleanup()


async def test_a_restarted_dovecot_is_reconnected_and_new_mail_imported(
        dovecot: Dovecot, store: StateStore) -> None:
    dovecot.append(mail(1))
    intake = Intake(store, RecordingPublisher())
    await intake.start(account(dovecot.port))
    try:
        await intake.until(1)
        await asyncio.to_thread(dovecot.stop)
        await asyncio.sleep(0.5)
        await asyncio.to_thread(dovecot.start)
        await asyncio.to_thread(dovecot.append, mail(2))
        messages = await intake.until(2, timeout=20)
        assert [m.subject for m in messages] == ["mail 1", "mail 2"]
    finally:
        await intake.close()


class HeldPublisher(RecordingPublisher):
    """Keeps each publish waiting until `release` is set: the import stays mid-backlog."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    async def publish(self, message: Any, exchange: str = "inbound", *,
                      timeout: float | None = None) -> None:
        await self.release.wait()
        await super().publish(message, exchange, timeout=timeout)


def imap_metric(name: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"service": "email", "account": USER})


async def test_lag_and_backlog_show_the_oldest_unimported_mail_then_zero(
        dovecot: Dovecot, store: StateStore) -> None:
    two_hours_ago = datetime.now(UTC) - timedelta(hours=2)
    with imapclient.IMAPClient("127.0.0.1", dovecot.port, ssl=False, timeout=10) as client:
        client.login(USER, PASSWORD)
        for n in (1, 2):
            client.append("INBOX", mail(n), msg_time=two_hours_ago)
    publisher = HeldPublisher()
    intake = Intake(store, publisher)
    await intake.start(account(dovecot.port))
    try:
        for _ in range(200):
            if imap_metric("intake_email_imap_backlog") == 2:
                break
            await asyncio.sleep(0.05)
        lag = imap_metric("intake_email_imap_lag_seconds")
        assert imap_metric("intake_email_imap_backlog") == 2
        assert lag is not None and 7200 - 120 < lag < 7200 + 120
        publisher.release.set()
        await intake.until(2)
        for _ in range(100):
            if imap_metric("intake_email_imap_lag_seconds") == 0:
                break
            await asyncio.sleep(0.05)
        assert imap_metric("intake_email_imap_lag_seconds") == 0
        assert imap_metric("intake_email_imap_backlog") == 0
        assert STATUS[USER]["lag_s"] == 0
    finally:
        publisher.release.set()
        await intake.close()


class ExpungedBeforeFetch:
    """An IMAP connection on which another client (a person in webmail, a rule) deletes and
    expunges one mail after the intake's SEARCH and size FETCH, just before its body FETCH."""

    def __init__(self, client: imapclient.IMAPClient, dovecot: Dovecot, uid: int) -> None:
        self.client = client
        self.dovecot = dovecot
        self.uid = uid

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def fetch(self, uids: list[int], items: list[str]) -> Any:
        if items == ["BODY.PEEK[]"] and list(uids) == [self.uid]:
            with imapclient.IMAPClient("127.0.0.1", self.dovecot.port, ssl=False) as other:
                other.login(USER, PASSWORD)
                other.select_folder("INBOX")
                other.delete_messages([self.uid])
                other.expunge()
        return self.client.fetch(uids, items)


async def test_a_mail_expunged_between_search_and_fetch_is_skipped_and_the_rest_imported(
        dovecot: Dovecot, store: StateStore) -> None:
    for n in (1, 2, 3):
        dovecot.append(mail(n))
    publisher = RecordingPublisher()
    acct = account(dovecot.port)
    deliverer = Deliverer(publisher, MemoryBlobStore(), EmailAccounts(accounts=[acct]),
                          EmailSettings(), ParserPool(0, 30.0))
    cursors = EmailState(store).cursors(acct.id)
    poller = MailboxPoller(acct, deliverer, cursors, asyncio.get_running_loop(),
                           threading.Event())

    def import_once() -> int:
        with imapclient.IMAPClient("127.0.0.1", dovecot.port, ssl=False) as client:
            client.login(USER, PASSWORD)
            uidvalidity = int(client.select_folder("INBOX")[b"UIDVALIDITY"])
            return poller.import_new(ExpungedBeforeFetch(client, dovecot, 2),  # type: ignore[arg-type]
                                     uidvalidity, 0)

    assert await asyncio.to_thread(import_once) == 3
    assert [m.subject for m in publisher.messages] == ["mail 1", "mail 3"]
    assert (await cursors.get("INBOX"))["last_uid"] == 3


async def test_killed_between_publish_and_seen_the_restart_imports_that_mail_again_once(
        dovecot: Dovecot, tmp_path: Path) -> None:
    for n in (1, 2, 3):
        dovecot.append(mail(n))
    state_db, keys = tmp_path / "state.sqlite3", tmp_path / "keys.txt"
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "connectors.email.tests.imap_child", str(dovecot.port),
        str(state_db), str(keys), "2", cwd=Path(__file__).resolve().parents[3])
    assert await asyncio.wait_for(child.wait(), 60) == -signal.SIGKILL
    before = keys.read_text().split()
    assert len(before) == 2  # mail 1 and mail 2 durable, then the kill
    assert seen_flags(dovecot) == {1: True, 2: False, 3: False}
    async with StateStore(f"sqlite+aiosqlite:///{state_db}") as store:
        assert (await EmailState(store).cursors(USER).get("INBOX"))["last_uid"] == 1
        intake = Intake(store, RecordingPublisher())
        await intake.start(account(dovecot.port))
        try:
            after = [m.idempotency_key for m in await intake.until(2)]
            await asyncio.sleep(0.5)  # nothing more comes
            assert len(intake.publisher.messages) == 2
        finally:
            await intake.close()
    assert after[0] == before[1]  # mail 2 again, by its key: stored once downstream
    assert len({*before, *after}) == 3  # mail 1 not again, mail 3 once
    assert seen_flags(dovecot) == {1: True, 2: True, 3: True}
