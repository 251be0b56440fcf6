"""The SMTP listener (aiosmtpd): the push path for an MTA, a forwarding rule, or any client.

`250` only once the mail is durable (raw in the blob store, the message confirmed or in the
outbox), `451 4.3.0` otherwise; recipients are mapped to accounts at RCPT, so a mail for nobody
is refused before its data is sent. DATA lines up to 1 MiB, ended by CRLF or a bare LF, are kept
as they are (real mailers send 60 kB lines), and only `<CRLF>.<CRLF>` ends the data (SMTP
smuggling; `smtp_data.py`). A silent session, or a DATA transfer longer than
`INTAKE_EMAIL_DATA_TIMEOUT_S` (a client trickling bytes), is cut with `421 4.4.2`.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import ssl
from collections import Counter as Tally
from typing import Any, cast

from aiohttp import web
from aiosmtpd.proxy_protocol import ProxyData
from aiosmtpd.smtp import MISSING, SMTP, Session
from aiosmtpd.smtp import Envelope as SmtpEnvelope
from prometheus_client import Counter, Gauge

from intake import (
    ACCOUNTS,
    BLOBS,
    PUBLISHER,
    SERVICE_SETTINGS,
    SETTINGS,
    IntakeError,
    Listener,
    StateStore,
    get_logger,
    smtp_reply,
)

from ..normalize import Envelope
from ..settings import EmailAccounts, EmailSettings
from ..state import EmailState
from . import Deliverer, Target
from .export import HOSTNAME
from .smtp_data import read_data

log = get_logger(service="email", component="smtp")
SESSIONS = Counter("intake_email_smtp_sessions_total", "SMTP sessions opened", ["service"])
ANSWERS = Counter("intake_email_smtp_answers_total", "SMTP answers to DATA, by code",
                  ["service", "code"])
BYTES_IN = Counter("intake_email_smtp_bytes_total", "Bytes of mail received over SMTP", ["service"])
REPLIES = Counter("intake_email_smtp_replies_total",
                  "Every SMTP reply line sent (the last of a multi-line one), by command and code",
                  ["service", "command", "code"])
SESSIONS_OPEN = Gauge("intake_email_smtp_sessions_open", "SMTP sessions open now", ["service"])
LINE_LIMIT = 1024 * 1024
PROXY_TIMEOUT_S = 5.0  # a balancer sends its PROXY header at once; a silent peer is dropped
DELIVERER: web.AppKey[Deliverer] = web.AppKey("email_deliverer", Deliverer)
EMAIL_STATE: web.AppKey[EmailState] = web.AppKey("email_state", EmailState)


def split_address(address: str) -> tuple[str, str | None]:
    """`Support+x@Shop.example` -> (`support@shop.example`, `x`)."""
    local, _, domain = address.strip().strip("<>").rpartition("@")
    base, plus, detail = local.partition("+")
    return f"{base}@{domain}".lower(), (detail if plus else None)


def resolve(address: str, accounts: EmailAccounts) -> Target | str:
    """The account a recipient names, or the SMTP answer refusing it."""
    plain, detail = split_address(address)
    for account in accounts.accounts:
        if account.smtp_in and plain in account.addresses:
            return Target(account, detail or None)
    domain = plain.rpartition("@")[2]
    if domain in accounts.domains:
        return f"550 5.1.1 <{address}>: no such mailbox here"
    return "550 5.7.1 relaying denied"


class EmailHandler:
    """aiosmtpd's handler hooks, answering with the kernel's SMTP codes."""

    def __init__(self, deliverer: Deliverer) -> None:
        self.deliverer = deliverer

    @property
    def settings(self) -> EmailSettings:
        return self.deliverer.settings

    async def handle_PROXY(self, server: SMTP, session: Session, envelope: SmtpEnvelope,
                           proxy: ProxyData) -> bool:
        """Called before the greeting when `INTAKE_EMAIL_PROXY_PROTOCOL` is on (v1 or v2)."""
        return await cast(EmailSMTP, server).admit_proxied(proxy)

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: SmtpEnvelope,
                          hostname: str, responses: list[str]) -> list[str]:
        session.host_name = hostname
        return [*responses[:-1], "250-ENHANCEDSTATUSCODES", responses[-1]]

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: SmtpEnvelope,
                          address: str, options: list[str]) -> str:
        if self.settings.require_tls and not session.ssl:
            return "530 5.7.0 Must issue a STARTTLS command first"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: SmtpEnvelope,
                          address: str, options: list[str]) -> str:
        if len(envelope.rcpt_tos) >= self.settings.max_recipients:
            return "452 4.5.3 Too many recipients"
        target = resolve(address, self.deliverer.accounts)
        if isinstance(target, str):
            return target
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: SmtpEnvelope) -> str:
        raw = envelope.original_content or b""
        BYTES_IN.labels("email").inc(len(raw))
        answer = await self.deliver(raw, envelope.mail_from, list(envelope.rcpt_tos),
                                    client=_peer(session), helo=session.host_name,
                                    tls=bool(session.ssl))
        ANSWERS.labels("email", answer[:3]).inc()
        return answer

    async def deliver(self, raw: bytes, mail_from: str | None, rcpt_tos: list[str], *,
                      client: str | None = None, helo: str | None = None,
                      tls: bool = False) -> str:
        """The answer to one transaction's data: the entry point the contract suite calls."""
        targets: dict[str, Target] = {}
        for address in rcpt_tos:
            target = resolve(address, self.deliverer.accounts)
            if isinstance(target, Target):
                targets.setdefault(target.account.id, target)  # one message per account
        if not targets:
            return "554 5.5.1 no valid recipients"
        envelope = Envelope(mail_from=(mail_from or "").strip("<>"), rcpt_to=tuple(rcpt_tos),
                            client=client, helo=helo, tls=tls)
        try:
            messages = await self.deliverer.deliver(raw, envelope, list(targets.values()))
        except IntakeError as exc:
            reply = smtp_reply(exc)
            log.warning("mail_deferred", reason=exc.reason, code=reply.code)
            return reply.line()
        except Exception:
            log.exception("mail_delivery_failed")
            return "451 4.3.0 try again later"
        key = messages[0].idempotency_key if messages else ""
        return f"250 2.0.0 OK queued as {key[-32:]}"


class EmailSMTP(SMTP):
    """aiosmtpd's SMTP with 1 MiB lines and the session limits (each a proper 4xx)."""

    _data_deadline: float | None = None  # while DATA is read: when its time is up
    _last_read = 0.0  # loop time of the last bytes received

    line_length_limit = LINE_LIMIT

    def __init__(self, handler: EmailHandler, settings: EmailSettings,
                 tls_context: ssl.SSLContext | None, sessions: Tally[str],
                 **kwargs: Any) -> None:
        super().__init__(handler, data_size_limit=settings.max_message_bytes,
                         enable_SMTPUTF8=True, decode_data=False, hostname=kwargs.pop(
                             "hostname", None) or HOSTNAME, ident="intake email",
                         tls_context=tls_context, require_starttls=settings.require_tls,
                         timeout=settings.idle_timeout_s,
                         proxy_protocol_timeout=PROXY_TIMEOUT_S if settings.proxy_protocol
                         else None, **kwargs)
        self.limits = settings
        self.sessions = sessions  # open sessions by client address ("*": all), per server
        self._client: str | None = None
        self._counted = False
        self._command = "CONNECT"  # the command the next reply answers (a label value)
        self._smtp_methods = {name: self._noting(name, method)
                              for name, method in self._smtp_methods.items()}

    async def push(self, status: Any) -> None:
        """aiosmtpd's one way out for every reply: counted here by command and code."""
        text = status.decode("utf-8", "replace") if isinstance(status, bytes) else str(status)
        if text[3:4] != "-":  # the last line of a multi-line reply
            REPLIES.labels("email", self._command, text[:3]).inc()
        await super().push(status)

    def _noting(self, command: str, method: Any) -> Any:
        """`method` (aiosmtpd's `smtp_<COMMAND>`) labelling the replies it sends."""
        @functools.wraps(method)
        async def answering(arg: str | None) -> Any:
            self._command = command
            try:
                return await method(arg)
            finally:
                self._command = "OTHER"  # a reply outside a command: syntax, line too long
        return answering

    async def smtp_DATA(self, arg: str) -> None:
        """aiosmtpd's DATA, reading the data with `read_data` under the DATA time limit.

        aiosmtpd resets its idle timer per command only, so a whole transfer had to fit in the
        idle timeout however fast it went, and a client trickling a byte now and then held the
        session until then. Here the idle timeout counts silence between data pieces (RFC 5321
        4.5.3.2.5's data block timeout) and `data_timeout_s` bounds the whole transfer. While
        the handler makes the mail durable no timer runs: that wait is ours, not the client's.
        """
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        self._last_read = self.loop.time()
        self._data_deadline = self._last_read + self.limits.data_timeout_s
        self._reset_timeout(min(self.limits.idle_timeout_s, self.limits.data_timeout_s))
        try:
            section = await read_data(self._reader, max_bytes=self.limits.max_message_bytes)
        finally:
            self._data_deadline = None
        if section is None or self.transport is None:
            return  # the connection ended (or timed out) before the data did
        if self._timeout_handle is not None:
            self._timeout_handle.cancel()
        try:
            status: Any = section.refusal
            if status is None:
                self.envelope.content = section.content
                self.envelope.original_content = section.content
                status = await self._call_handler_hook("DATA")
        finally:
            if self.transport is not None:
                self._reset_timeout()
        self._set_post_data_state()
        await self.push("250 OK" if status is MISSING else status)

    def data_received(self, data: bytes) -> None:
        self._last_read = self.loop.time()  # any bytes count as activity (the idle clock)
        super().data_received(data)

    def _timeout_cb(self) -> None:
        """Idle or DATA time up: `421 4.4.2` and the connection closed (RFC 5321 4.5.3.2)."""
        if self.transport is None:
            return
        phase = "idle"
        if self._data_deadline is not None:
            now = self.loop.time()
            idle_left = self._last_read + self.limits.idle_timeout_s - now
            data_left = self._data_deadline - now
            if idle_left > 0 and data_left > 0:  # data is coming: look again when one runs out
                self._reset_timeout(max(min(idle_left, data_left), 0.01))
                return
            phase = "data" if data_left <= 0 else "idle"
        answer = (f"421 4.4.2 {self.hostname} DATA took longer than "
                  f"{self.limits.data_timeout_s:g} s, closing connection" if phase == "data"
                  else f"421 4.4.2 {self.hostname} idle timeout, closing connection")
        REPLIES.labels("email", self._command, "421").inc()  # DATA within it, else OTHER
        log.info("smtp_timed_out", client=self._client, phase=phase)
        self.transport.write(answer.encode() + b"\r\n")  # type: ignore[attr-defined]
        self.transport.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._counted:  # the TLS transport after STARTTLS: the same session, counted once
            super().connection_made(transport)
            return
        peer = transport.get_extra_info("peername")
        client = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        # Behind a load balancer the peer is the balancer: the client's own limits wait for
        # its PROXY header (`admit_proxied`); only the total is checked here.
        proxied = self.limits.proxy_protocol
        refusal = self._total_refusal() if proxied else self._refusal(client)
        if refusal is not None:
            REPLIES.labels("email", "CONNECT", refusal[:3]).inc()
            transport.write(refusal.encode() + b"\r\n")  # type: ignore[attr-defined]
            transport.close()
            return
        self._counted = True
        self.sessions["*"] += 1
        if not proxied:
            self._client = client
            self.sessions[client] += 1
        SESSIONS.labels("email").inc()
        SESSIONS_OPEN.labels("email").inc()
        super().connection_made(transport)

    async def admit_proxied(self, proxy: ProxyData) -> bool:
        """The client named by the PROXY header, under the trusted-relay and per-client limits.

        A `LOCAL` header (a balancer's own health check) names no client: the peer counts.
        """
        source = proxy.src_addr
        peer = self.session.peer if self.session is not None else None
        client = str(source) if source else (str(peer[0]) if isinstance(peer, tuple) and peer
                                             else "unknown")
        refusal = self._refusal(client, total=False)
        if refusal is not None:
            await self.push(refusal)  # counted under CONNECT: no command was read yet
            log.info("smtp_refused", client=client, answer=refusal)
            return False
        self._client = client
        self.sessions[client] += 1
        return True

    def connection_lost(self, error: Exception | None) -> None:
        if self._counted:
            self._counted = False
            self.sessions["*"] -= 1
            if self._client is not None:
                self.sessions[self._client] -= 1
            SESSIONS_OPEN.labels("email").dec()
        super().connection_lost(error)

    def _total_refusal(self) -> str | None:
        if self.sessions["*"] >= self.limits.max_sessions:
            return "421 4.7.0 too many sessions, try again later"
        return None

    def _refusal(self, client: str, *, total: bool = True) -> str | None:
        relays = [n.strip() for n in self.limits.trusted_relays.split(",") if n.strip()]
        if relays and not _within(client, relays):
            return "554 5.7.1 not a trusted relay"
        if total and (refusal := self._total_refusal()) is not None:
            return refusal
        if self.sessions[client] >= self.limits.max_sessions_per_client:
            return "421 4.7.0 too many sessions from your address, try again later"
        return None


def _within(client: str, networks: list[str]) -> bool:
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(n, strict=False) for n in networks)


def _peer(session: Session) -> str | None:
    """The client's address: the PROXY header's source behind a balancer, else the peer."""
    proxied = session.proxy_data
    if proxied is not None and getattr(proxied, "src_addr", None):
        return str(proxied.src_addr)
    peer = session.peer
    return str(peer[0]) if isinstance(peer, tuple) and peer else None


def tls_context(settings: EmailSettings) -> ssl.SSLContext | None:
    if not settings.tls_cert or not settings.tls_key:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    return context


async def start_server(deliverer: Deliverer, host: str, port: int) -> asyncio.Server:
    """The listening SMTP server (an `asyncio.Server`, as the kernel's Listener wants)."""
    settings = deliverer.settings
    handler = EmailHandler(deliverer)
    context = tls_context(settings)
    loop = asyncio.get_running_loop()
    sessions: Tally[str] = Tally()
    server = await loop.create_server(
        lambda: EmailSMTP(handler, settings, context, sessions, loop=loop), host, port)
    log.info("smtp_listening", host=host, port=port)
    return server


async def open_listener(app: web.Application) -> asyncio.Server:
    settings = cast(EmailSettings, app[SERVICE_SETTINGS])
    return await start_server(deliverer_of(app), settings.smtp_host, settings.smtp_port)


def deliverer_of(app: web.Application) -> Deliverer:
    if DELIVERER not in app:
        raise RuntimeError("the email service's deliverer is not set up")
    return app[DELIVERER]


async def deliverer_context(app: web.Application) -> Any:
    """A cleanup context: the deliverer (and its worker pool) for the service's life."""
    deliverer = Deliverer.build(app[PUBLISHER], app[BLOBS], cast(EmailAccounts, app[ACCOUNTS]),
                                cast(EmailSettings, app[SERVICE_SETTINGS]))
    store = StateStore.from_settings(app[SETTINGS])
    await store.open()
    state = EmailState(store)

    async def note_bounced(account: str, addresses: list[str]) -> None:
        # A permanent failure holds automatic mail to the address back (outbound.py).
        await state.note_bounced(addresses)
        log.info("address_bounced", account=account, addresses=addresses[:10])

    deliverer.on_permanent_failure = note_bounced
    app[DELIVERER] = deliverer
    app[EMAIL_STATE] = state
    yield
    deliverer.pool.close()
    await store.close()


LISTENER = Listener(name="smtp", open=open_listener)
