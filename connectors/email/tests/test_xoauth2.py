"""XOAUTH2 end to end: a local OAuth2 token server, Dovecot's oauth2 passdb asking it about each
token (`introspection_mode = post`), the IMAP intake logging in with XOAUTH2, the rotated
refresh token persisted and used after a restart; and SMTP XOAUTH2 to an aiosmtpd relay."""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword
from pydantic import SecretStr

from connectors.email.client import TokenRefused, TokenSource, token_namespace
from connectors.email.inbound import Deliverer, ParserPool
from connectors.email.inbound.imap import STATUS, MailboxPoller
from connectors.email.outbound import EmailSender
from connectors.email.settings import (
    EmailAccount,
    EmailAccounts,
    EmailSettings,
    ImapMailbox,
    OAuth2,
    OutboundRelay,
)
from connectors.email.state import EmailState
from intake import SenderRunner, StateStore
from intake.testing import MemoryBlobStore, MemoryBus, RecordingPublisher

from .dovecot import USER, Dovecot, available
from .sink import Sink
from .test_imap import mail
from .test_outbound import ACCOUNT, accounts_for, outbound


@dataclass
class TokenServer:
    """An OAuth2 token endpoint (RFC 6749) that rotates refresh tokens, and the introspection
    endpoint (RFC 7662) Dovecot asks about each access token."""

    refresh_token: str = "rt-0"
    issued: set[str] = field(default_factory=set)
    grants: list[dict[str, str]] = field(default_factory=list)
    introspected: list[str] = field(default_factory=list)
    revoked: bool = False  # introspection answers every token inactive
    server: TestServer | None = None

    async def token(self, request: web.Request) -> web.Response:
        form = dict(await request.post())
        self.grants.append({k: str(v) for k, v in form.items()})
        if form.get("grant_type") == "refresh_token" and \
                form.get("refresh_token") != self.refresh_token:
            return web.json_response({"error": "invalid_grant"}, status=400)
        if form.get("grant_type") == "client_credentials" and form.get("client_secret") != "s":
            return web.json_response({"error": "invalid_client"}, status=401)
        number = len(self.issued) + 1
        access = f"at-{number}"
        self.issued.add(access)
        answer: dict[str, Any] = {"access_token": access, "token_type": "Bearer",
                                  "expires_in": 3600}
        if form.get("grant_type") == "refresh_token":
            self.refresh_token = f"rt-{number}"  # rotated, as Microsoft does
            answer["refresh_token"] = self.refresh_token
        return web.json_response(answer)

    async def introspect(self, request: web.Request) -> web.Response:
        form = await request.post()
        token = str(form.get("token", ""))
        self.introspected.append(token)
        if token in self.issued and not self.revoked:
            return web.json_response({"active": True, "email": USER})
        return web.json_response({"active": False})

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url(""))


@pytest.fixture
async def tokens() -> AsyncIterator[TokenServer]:
    state = TokenServer()
    app = web.Application()
    app.router.add_post("/token", state.token)
    app.router.add_post("/introspect", state.introspect)
    state.server = TestServer(app, host="127.0.0.1")
    await state.server.start_server()
    yield state
    await state.server.close()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[StateStore]:
    async with StateStore(f"sqlite+aiosqlite:///{tmp_path / 'state.sqlite3'}") as opened:
        yield opened


def oauth(server: TokenServer, **changes: Any) -> OAuth2:
    return OAuth2(**{"token_url": f"{server.url}/token", "client_id": "intake",
                     "refresh_token": SecretStr("rt-0"),
                     "scope": "https://outlook.office.com/IMAP.AccessAsUser.All offline_access",
                     **changes})


# -- the token source -----------------------------------------------------------------------


async def test_a_token_is_cached_and_a_rotated_refresh_token_persisted(
        tokens: TokenServer, store: StateStore) -> None:
    source = TokenSource("a:imap", oauth(tokens), token_namespace(store))
    assert await source.access_token() == "at-1"
    assert await source.access_token() == "at-1"  # cached: one grant
    assert len(tokens.grants) == 1 and tokens.grants[0]["refresh_token"] == "rt-0"
    assert tokens.grants[0]["scope"].startswith("https://outlook.office.com/")
    assert (await token_namespace(store).get("a:imap"))["refresh_token"] == "rt-1"
    again = TokenSource("a:imap", oauth(tokens), token_namespace(store))  # after a restart
    assert await again.access_token() == "at-2"
    assert tokens.grants[1]["refresh_token"] == "rt-1"  # not the configured, dead rt-0


async def test_client_credentials_and_a_refused_grant(tokens: TokenServer) -> None:
    app_only = TokenSource("a:imap", oauth(tokens, grant="client_credentials",
                                           client_secret=SecretStr("s"), refresh_token=None,
                                           scope="https://outlook.office365.com/.default"))
    assert await app_only.access_token() == "at-1"
    assert tokens.grants[0]["grant_type"] == "client_credentials"
    revoked = TokenSource("b:imap", oauth(tokens, refresh_token=SecretStr("revoked")))
    with pytest.raises(TokenRefused, match="invalid_grant"):
        await revoked.access_token()


# -- IMAP against Dovecot's oauth2 passdb -----------------------------------------------------

needs_dovecot = pytest.mark.skipif(not available(), reason="needs Dovecot and root "
                                   "(deploy/local/install-test-tools.sh)")


@pytest.fixture
def dovecot(tokens: TokenServer) -> Iterator[Dovecot]:
    server = Dovecot.create(introspection_url=f"{tokens.url}/introspect").start()
    yield server
    server.cleanup()


def xoauth2_account(port: int, settings: OAuth2) -> EmailAccount:
    return EmailAccount(id=USER, address=USER, smtp_in=False, imap=ImapMailbox(
        host="127.0.0.1", port=port, security="none", username=USER, auth="xoauth2",
        oauth2=settings, start_from="all", poll_seconds=0.2))


async def imported(account: EmailAccount, store: StateStore, count: int) -> list[Any]:
    """One service life: a poller with the persisted tokens, until `count` mails are in."""
    publisher = RecordingPublisher()
    deliverer = Deliverer(publisher, MemoryBlobStore(), EmailAccounts(accounts=[account]),
                          EmailSettings(), ParserPool(0, 30.0))
    assert account.imap is not None and account.imap.oauth2 is not None
    source = TokenSource(f"{account.id}:imap", account.imap.oauth2, token_namespace(store))
    stop = threading.Event()
    poller = MailboxPoller(account, deliverer, EmailState(store).cursors(account.id),
                           asyncio.get_running_loop(), stop, tokens=source)
    thread = threading.Thread(target=poller.run, daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if len(publisher.messages) >= count or STATUS[USER].get("state") == "auth_error":
                break
            await asyncio.sleep(0.05)
        return list(publisher.messages)
    finally:
        stop.set()
        await asyncio.to_thread(thread.join, 10)


@needs_dovecot
async def test_imap_xoauth2_end_to_end_with_the_rotated_token_after_a_restart(
        tokens: TokenServer, dovecot: Dovecot, store: StateStore) -> None:
    STATUS.pop(USER, None)
    account = xoauth2_account(dovecot.port, oauth(tokens))
    dovecot.append(mail(1))
    first = await imported(account, store, 1)
    assert [m.subject for m in first] == ["mail 1"], dovecot.log()
    assert tokens.introspected == ["at-1"]  # Dovecot asked the token server
    assert tokens.refresh_token == "rt-1"
    dovecot.append(mail(2))
    second = await imported(account, store, 1)  # rt-0 is dead now: only rt-1 works
    assert [m.subject for m in second] == ["mail 2"], (STATUS[USER], dovecot.log())
    assert [g["refresh_token"] for g in tokens.grants] == ["rt-0", "rt-1"]


@needs_dovecot
async def test_imap_xoauth2_with_a_revoked_refresh_token_is_an_auth_error(
        tokens: TokenServer, dovecot: Dovecot, store: StateStore) -> None:
    STATUS.pop(USER, None)
    account = xoauth2_account(dovecot.port, oauth(tokens, refresh_token=SecretStr("revoked")))
    dovecot.append(mail(1))
    assert await imported(account, store, 1) == []
    assert STATUS[USER]["state"] == "auth_error"
    assert "invalid_grant" in STATUS[USER]["last_error"]


@needs_dovecot
async def test_a_token_the_server_revoked_is_an_auth_error(
        tokens: TokenServer, dovecot: Dovecot, store: StateStore) -> None:
    STATUS.pop(USER, None)
    tokens.revoked = True  # the token endpoint issues it, introspection says inactive
    account = xoauth2_account(dovecot.port, oauth(tokens))
    dovecot.append(mail(1))
    assert await imported(account, store, 1) == []
    assert STATUS[USER]["state"] == "auth_error"
    assert tokens.introspected[:1] == ["at-1"]


# -- SMTP XOAUTH2 to the relay ----------------------------------------------------------------


class OAuthRelay(Sink):
    """An aiosmtpd relay that takes XOAUTH2 (RFC 7628's Google/Microsoft form) and nothing
    else, checking each bearer token against the token server's issued ones."""

    def __init__(self, tokens: TokenServer) -> None:
        super().__init__()
        self.tokens = tokens
        self.logins: list[tuple[str, str]] = []

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:
        initial = args[1] if len(args) > 1 else await server.challenge_auth("")
        if not isinstance(initial, str | bytes):
            return AuthResult(success=False, handled=False)
        fields = base64.b64decode(initial).decode().split("\x01")
        user = fields[0].removeprefix("user=")
        token = fields[1].removeprefix("auth=Bearer ")
        self.logins.append((user, token))
        ok = token in self.tokens.issued and not self.tokens.revoked
        return AuthResult(success=ok, handled=False, auth_data=LoginPassword(
            user.encode(), token.encode()) if ok else None)

    async def start(self, port: int = 0) -> OAuthRelay:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: SMTP(self, enable_SMTPUTF8=True, hostname="relay.test",
                         auth_require_tls=False, auth_required=True,
                         authenticator=lambda *a: AuthResult(success=False)),
            "127.0.0.1", port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
async def test_smtp_xoauth2_sends_through_a_relay_that_takes_only_bearer_tokens(
        tokens: TokenServer, tmp_path: Path) -> None:
    relay = await OAuthRelay(tokens).start()
    settings = OutboundRelay(host="127.0.0.1", port=relay.port, security="none",
                             auth="xoauth2", oauth2=oauth(
                                 tokens, scope="https://outlook.office.com/SMTP.Send "
                                               "offline_access"))
    loaded = accounts_for(relay.port)
    accounts = loaded.model_copy(update={"accounts": [
        a.model_copy(update={"outbound": settings}) if a.id == ACCOUNT else a
        for a in loaded.accounts]})
    runner = SenderRunner(MemoryBus(), "email", EmailSender,
                          StateStore(f"sqlite+aiosqlite:///{tmp_path / 'state.sqlite3'}"),
                          accounts=accounts, poll_s=3600)
    await runner.open()
    try:
        await runner.handle(outbound(kind="reply"))
        await runner.handle(outbound(kind="reply"))
        assert isinstance(runner.bus, MemoryBus)
        assert [r.status for _, r in runner.bus.results] == ["sent", "sent"]
        assert relay.logins == [(ACCOUNT, "at-1"), (ACCOUNT, "at-1")]  # one token, cached
        assert len(relay.mails) == 2
        assert (await token_namespace(runner.state).get(f"{ACCOUNT}:smtp"))[
            "refresh_token"] == "rt-1"
        tokens.revoked = True  # the relay refuses the token now: retried, not failed
        await runner.handle(outbound(kind="reply"))
        assert [r.status for _, r in runner.bus.results] == ["sent", "sent"]
        assert await runner.retries.depth() == 1
    finally:
        await runner.close()
        await relay.stop()
