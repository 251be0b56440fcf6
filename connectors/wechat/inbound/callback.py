"""The callback endpoint `/wechat/{account_id}`: WeChat's URL check (GET) and its pushes (POST).

A POST is verified (signature, timestamp, replay, mode, decryption, recipient), parsed through
defusedxml, made durable (published, or its job fsynced in the work queue) within the deadline
and only then answered: `success` (WeCom: an empty body) or the passive reply. Every refusal is
one log line and one count in `intake_wechat_callbacks_total{account,outcome}`.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid

from aiohttp import web
from prometheus_client import Counter, Histogram
from wechatpy.crypto import WeChatCrypto
from wechatpy.replies import TextReply

from intake import (
    ACCOUNTS,
    BLOBS,
    PUBLISHER,
    SERVICE_SETTINGS,
    IntakeError,
    Rejected,
    Transient,
    error_answer,
    get_logger,
    utcnow,
)

from ..errors import (
    AccountUnknown,
    ModeWrong,
    NonceReplayed,
    NotDurable,
    PayloadTooLarge,
    RecipientWrong,
    XmlInvalid,
)
from ..normalize import Callback, to_message
from ..settings import OfficialAccount, WechatAccounts, WechatSettings, WecomApp
from .runtime import LazyRuntime, WechatRuntime
from .verify import (
    aes_key,
    check_signature,
    check_timestamp,
    decrypt,
    event_name,
    parse_xml,
    require_message_fields,
)
from .work import job_of

CHUNK = 64 * 1024
CALLBACKS = Counter("intake_wechat_callbacks_total", "WeChat callbacks by account and outcome",
                    ["service", "account", "outcome"])
ANSWER_SECONDS = Histogram("intake_wechat_callback_seconds",
                           "Time to answer a WeChat callback, by account", ["service", "account"],
                           buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 5))
log = get_logger(service="wechat", component="callback")
Account = OfficialAccount | WecomApp


def _account(request: web.Request) -> Account:
    accounts: WechatAccounts = request.app[ACCOUNTS]  # type: ignore[assignment]
    account = accounts.find(request.match_info.get("account_id", ""))
    if account is None:
        raise AccountUnknown("There is no WeChat account with this id.")
    return account


def _refused(request: web.Request, label: str, exc: IntakeError) -> web.Response:
    """The kernel's JSON error, one log line (never a secret or the body), one count."""
    CALLBACKS.labels("wechat", label, exc.reason).inc()
    log.info("callback_refused", reason=exc.reason, account=label, peer=request.remote,
             method=request.method, detail=str(exc)[:200])
    return error_answer(exc, "wechat")


async def _read_limited(request: web.Request, limit: int) -> bytes:
    """The body, refused as soon as it passes `limit` (never buffered whole first)."""
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"The body is over {limit} bytes.")
    chunks, size = [], 0
    async for chunk in request.content.iter_chunked(CHUNK):
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The body is over {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


async def check_url(request: web.Request) -> web.Response:
    """GET: WeChat's URL check. Answers the echostr (WeCom: decrypted) as plain text."""
    label = "unknown"
    try:
        account = _account(request)
        label = account.id
        q = request.query
        timestamp, nonce, echostr = q.get("timestamp", ""), q.get("nonce", ""), q.get(
            "echostr", "")
        token = account.token.get_secret_value()
        if isinstance(account, WecomApp):
            check_signature(q.get("msg_signature"), token, timestamp, nonce, echostr)
            check_timestamp(timestamp, time.time(), account.max_clock_skew_s)
            key = aes_key(account.encoding_aes_key.get_secret_value())
            answer = decrypt(echostr, key, account.corp_id).decode("utf-8", "replace")
        else:
            check_signature(q.get("signature"), token, timestamp, nonce)
            check_timestamp(timestamp, time.time(), account.max_clock_skew_s)
            answer = echostr
    except (Rejected, XmlInvalid) as exc:
        return _refused(request, label, exc)
    CALLBACKS.labels("wechat", label, "verified").inc()
    log.info("url_verified", account=label, peer=request.remote)
    return web.Response(body=answer.encode(), content_type="text/plain")


async def receive(request: web.Request, lazy: LazyRuntime) -> web.StreamResponse:
    """POST: one message or event."""
    started = time.perf_counter()
    label = "unknown"
    try:
        account = _account(request)
        label = account.id
        return await _receive(request, account, await lazy.of(request.app))
    except Rejected as exc:
        return _refused(request, label, exc)
    except Transient as exc:
        CALLBACKS.labels("wechat", label, exc.reason).inc()
        log.warning("callback_deferred", reason=exc.reason, account=label, peer=request.remote,
                    error=str(exc)[:300])
        return error_answer(exc, "wechat")
    finally:
        ANSWER_SECONDS.labels("wechat", label).observe(time.perf_counter() - started)


async def _receive(request: web.Request, account: Account,
                   runtime: WechatRuntime) -> web.Response:
    settings: WechatSettings = request.app[SERVICE_SETTINGS]  # type: ignore[assignment]
    body = await _read_limited(request, settings.max_body_bytes)
    q = request.query
    timestamp, nonce = q.get("timestamp", ""), q.get("nonce", "")
    token = account.token.get_secret_value()
    encrypted = isinstance(account, WecomApp) or q.get("encrypt_type", "").lower() == "aes"
    if encrypted and not account.encrypted:
        raise ModeWrong("This account is in plain mode; the request is encrypted.")
    if not encrypted and account.encrypted:
        raise ModeWrong(f"This account is in {account.mode} mode; the request is plain.")
    if encrypted:
        signature = q.get("msg_signature", "")
        # Only the ciphertext is covered by the signature: in compatible mode the body's
        # plaintext fields are ignored.
        envelope = parse_xml(body)
        ciphertext = envelope.get("Encrypt", "")
        if not ciphertext:
            raise XmlInvalid("The encrypted body has no Encrypt element.")
        check_signature(signature, token, timestamp, nonce, ciphertext)
        check_timestamp(timestamp, time.time(), account.max_clock_skew_s)
        assert account.encoding_aes_key is not None  # an encrypted account has one
        xml = decrypt(ciphertext, aes_key(account.encoding_aes_key.get_secret_value()),
                      account.receiver_id)
    else:
        signature = q.get("signature", "")
        check_signature(signature, token, timestamp, nonce)
        check_timestamp(timestamp, time.time(), account.max_clock_skew_s)
        xml = body
    if not encrypted:
        # Plain mode: the signature does not cover the body, so the same timestamp, nonce and
        # signature with another body is a forgery. (Encrypted: `msg_signature` covers the
        # ciphertext; another body cannot carry it, and the same body is a retry, deduplicated
        # by its key.)
        digest = hashlib.sha256(body).hexdigest()
        seen = await runtime.state.note_nonce(account.id, timestamp, nonce, signature, digest)
        if seen is not None and seen != digest:
            raise NonceReplayed("This timestamp, nonce and signature came with another body.")
    fields = parse_xml(xml)
    require_message_fields(fields)
    if account.original_id and fields.get("ToUserName", "") != account.original_id:
        raise RecipientWrong("ToUserName is not this account.")
    wecom = isinstance(account, WecomApp)
    is_event = fields.get("MsgType", "").strip().lower() == "event"
    callback = Callback(fields=fields, account=account.id, account_kind=account.kind,
                        verified=encrypted,
                        corp_id=account.corp_id if isinstance(account, WecomApp) else None,
                        wechat_event=event_name(xml, wecom=wecom) if is_event else None)
    if not await runtime.accept_once(callback, lambda: _make_durable(request, runtime,
                                                                     callback, xml)):
        CALLBACKS.labels("wechat", account.id, "duplicate").inc()
        log.info("callback_duplicate", account=account.id,
                 idempotency_key=callback.idempotency_key)
        return _success(account)
    CALLBACKS.labels("wechat", account.id, "accepted").inc()
    return await _answer(runtime, account, callback, timestamp, nonce, encrypted)


async def _make_durable(request: web.Request, runtime: WechatRuntime, callback: Callback,
                        xml: bytes) -> None:
    """Published, or its job in the work queue, within the deadline; else NotDurable."""
    settings = runtime.settings
    try:
        async with asyncio.timeout(settings.callback_deadline_s):
            raw = await request.app[BLOBS].put(xml)
            message_id, received_at, trace_id = uuid.uuid4(), utcnow(), uuid.uuid4().hex
            if await runtime.needs_work(callback):
                await runtime.state.work.push(job_of(
                    callback, message_id=message_id, received_at=received_at,
                    trace_id=trace_id, raw=raw))
                runtime.wake_worker()
            else:
                message = to_message(callback, message_id=message_id, received_at=received_at,
                                     trace_id=trace_id, raw=raw,
                                     enrichment=await runtime.cached_enrichment(callback))
                await request.app[PUBLISHER].publish(message, timeout=settings.publish_timeout_s)
            log.info("callback_accepted", account=callback.account, trace_id=trace_id,
                     idempotency_key=callback.idempotency_key, msg_type=callback.msg_type)
    except TimeoutError:
        raise NotDurable(f"The callback was not durable within {settings.callback_deadline_s} "
                         "s; WeChat will retry it.") from None
    except OSError as exc:
        raise NotDurable(f"The callback could not be stored: {exc}") from exc
    if callback.interaction:
        runtime.note_interaction(callback)


def _success(account: Account) -> web.Response:
    # An empty body (or `success`) tells WeChat to stop retrying; WeCom wants it empty.
    return web.Response(text="" if isinstance(account, WecomApp) else "success",
                        content_type="text/plain")


async def _answer(runtime: WechatRuntime, account: Account, callback: Callback,
                  timestamp: str, nonce: str, encrypted: bool) -> web.Response:
    """`success`, or the passive reply (at most once per customer per interval)."""
    reply = account.passive_reply if isinstance(account, OfficialAccount) else None
    if reply is None or callback.is_event:
        return _success(account)
    if not await runtime.state.passive_due(account.id, callback.sender, reply.min_interval_s):
        return _success(account)
    at = runtime.state.remember_passive(account.id, callback.sender)
    runtime.in_background(runtime.state.note_passive(account.id, callback.sender, at),
                          "passive_reply_unrecorded")
    xml = TextReply(target=callback.sender,
                    source=account.original_id or callback.fields.get("ToUserName", ""),
                    content=reply.text).render()
    if encrypted and isinstance(account, OfficialAccount):
        assert account.encoding_aes_key is not None
        crypto = WeChatCrypto(account.token.get_secret_value(),
                              account.encoding_aes_key.get_secret_value(), account.app_id)
        xml = crypto.encrypt_message(xml, nonce, timestamp)
    return web.Response(text=xml, content_type="application/xml")


def routes() -> list[web.RouteDef]:
    """The callback route of every account; each built app gets its own lazy runtime."""
    lazy = LazyRuntime()

    async def post(request: web.Request) -> web.StreamResponse:
        return await receive(request, lazy)

    return [web.get("/wechat/{account_id}", check_url, allow_head=False),
            web.post("/wechat/{account_id}", post)]


__all__ = ["CALLBACKS", "routes"]
