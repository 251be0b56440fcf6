"""WechatSender: agent replies through WeChat's customer-service message API.

Official accounts: `POST /cgi-bin/message/custom/send`; WeCom apps: `POST /cgi-bin/message/send`.
WeChat answers errcode 0 (`sent`); 45015 (the 48-hour window since the customer's last
interaction closed) or 45047 (the replies allowed for that interaction are used up): the reply
is held in `wechat:waiting`, reported `window_expired` at once, and sent, in order, as a later
attempt once the customer interacts again (then `sent`), or `failed` after
`INTAKE_WECHAT_REPLY_WAIT_DAYS`. 43004 (unfollowed), 40003 (invalid openid), 48001 (API not
authorised) and any other refusal: `failed`. -1, 45009, 5xx and network errors: retried by the
kernel. The reason always starts with WeChat's errcode.

Crash window: a held reply is marked `sending` before the API call; a crash between WeChat's
answer and the report leaves it marked, and it is then reported `failed` (`outcome_unknown`)
rather than sent twice (WeChat's API has no idempotency key).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from prometheus_client import Gauge

from intake import (
    Failed,
    IntakeSettings,
    OutboundMessage,
    RetryLater,
    SenderKit,
    SendOutcome,
    Sent,
    Taken,
    blob_store_for,
    get_logger,
    load_document,
)

from .client import WechatClient
from .errors import ApiError, ApiRefused
from .settings import WechatAccounts, WechatSettings, WecomApp
from .state import INTERACTION_GRAIN_S, WechatState

WINDOW_CLOSED = {45015: "the 48-hour window since the customer's last message has closed",
                 45047: "the replies allowed for the customer's last interaction are used up"}
REFUSALS = {43004: "the customer has unfollowed the account",
            40003: "the openid is not valid for this account",
            48001: "this account is not authorised for the customer-service API",
            81013: "the WeCom user is not in the app's visible range"}
WAITING = Gauge("intake_wechat_replies_waiting", "Replies held until their customer writes",
                ["service"])
log = get_logger(service="wechat", component="sender")


def body_of(message: OutboundMessage, account: Any) -> dict[str, Any]:
    """The API body of a text reply (agent text, or the subject when there is none)."""
    text = message.text or message.subject or ""
    if isinstance(account, WecomApp):
        user = message.to.value.split(":", 1)[1] if ":" in message.to.value else message.to.value
        return {"touser": user, "msgtype": "text", "text": {"content": text}}
    return {"touser": message.to.value, "msgtype": "text", "text": {"content": text}}


class WechatSender:
    """The channel's sender (intake/sending.py), built by the kernel with a `SenderKit`."""

    retry_delays_s = (5.0, 30.0, 120.0, 600.0, 1800.0)
    max_attempts = 8
    send_timeout_s = 30.0

    def __init__(self, kit: SenderKit) -> None:
        self.kit = kit
        self.settings: WechatSettings = kit.settings or WechatSettings()
        self.accounts: WechatAccounts = kit.accounts or _configured_accounts()
        self.state = WechatState(kit.state)
        self.client = WechatClient(self.settings, self.state)
        self.poll_s = 1.0
        self._task: asyncio.Task[None] | None = None
        self.blobs: Any = None  # the blob store holding reply attachments (opened on use)
        self.sent_ids: list[str] = []  # outbound ids WeChat took, in order (for tests and logs)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._release_forever(), name="wechat-waiting-replies")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        await self.client.close()
        if self.blobs is not None:
            await self.blobs.close()

    # -- the first attempt -----------------------------------------------------------------------

    async def send(self, message: OutboundMessage) -> SendOutcome:
        account = self.accounts.find(message.account)
        if account is None:
            return Failed("account_unknown", f"no WeChat account {message.account!r}")
        if message.to.kind not in ("wechat_openid", "wecom_userid"):
            return Failed("recipient_unsupported",
                          f"WeChat replies go to an openid or WeCom user, not {message.to.kind}")
        customer = message.to.value
        ahead = [key for key, _ in await self.state.waiting.items(
            prefix=f"{message.account}\x1f{customer}\x1f", limit=1)]
        if ahead:  # replies keep their order: this one waits behind the held ones
            return await self._hold(message, 1, "queued behind earlier replies held for the "
                                                "customer; goes out when they next write")
        try:
            answer = await self.client.send(account, body_of(message, account))
        except ApiRefused as exc:
            if exc.errcode in WINDOW_CLOSED:
                return await self._hold(message, 1, f"{exc.errcode} {WINDOW_CLOSED[exc.errcode]}"
                                        "; it goes out when the customer next writes")
            return Failed(_refusal(exc), str(exc))
        except ApiError as exc:
            return RetryLater(f"{exc.errcode if exc.errcode is not None else 'network'} "
                              f"{exc}"[:200])
        self.sent_ids.append(str(message.id))
        await self._send_images(account, message)
        return Sent(provider_message_id=str(answer.get("msgid") or "") or None)

    async def _send_images(self, account: Any, message: OutboundMessage) -> None:
        """The reply's images, each uploaded (`/cgi-bin/media/upload`) and sent after its text.

        WeChat's customer-service API sends no other file type to an official account's
        customer; those are named in the log. A failed image does not unsend the text.
        """
        for attachment in message.attachments:
            if not attachment.content_type.startswith("image/"):
                log.info("reply_attachment_skipped", outbound_id=str(message.id),
                         content_type=attachment.content_type)
                continue
            try:
                if self.blobs is None:
                    self.blobs = blob_store_for(IntakeSettings())
                data = await self.blobs.get(attachment.blob)
                media_id = await self.client.upload(account, "image", attachment.filename,
                                                    attachment.content_type, data)
                body = body_of(message, account)
                body.pop("text")
                await self.client.send(account, {**body, "msgtype": "image",
                                                 "image": {"media_id": media_id}})
            except (ApiError, ApiRefused, OSError, KeyError) as exc:
                log.warning("reply_image_failed", outbound_id=str(message.id),
                            error=str(exc)[:200])

    async def _hold(self, message: OutboundMessage, attempt: int, reason: str) -> Taken:
        await self.state.hold_reply(message.account, message.to.value, {
            "message": message.model_dump(mode="json", by_alias=True), "attempt": attempt + 1,
            "since": time.time(), "held_at": time.time()})
        WAITING.labels("wechat").inc()
        log.info("reply_held", outbound_id=str(message.id), account=message.account,
                 reason=reason)
        return Taken(status="window_expired", reason=reason)

    # -- later attempts: when the customer interacts again ------------------------------------

    async def _release_forever(self) -> None:
        while True:
            try:
                await self.release_due()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("waiting_replies_failed")
            await asyncio.sleep(self.poll_s)

    async def release_due(self) -> int:
        """Send the held replies of customers who interacted since; returns how many settled."""
        settled = 0
        held = await self.state.waiting_replies()
        WAITING.labels("wechat").set(len(held))
        blocked: set[tuple[str, str]] = set()
        for key, item in held:
            customer = self.state.customer_of(key)
            if customer in blocked:
                continue  # an earlier reply of this customer is still waiting: keep order
            outcome = await self._release(key, item, *customer)
            if outcome is None:
                blocked.add(customer)
            else:
                settled += 1
        return settled

    async def _release(self, key: str, item: dict[str, Any], account_id: str,
                       customer: str) -> bool | None:
        """True/False once settled (sent / failed), None while it must wait."""
        message = OutboundMessage.model_validate(item["message"])
        attempt = int(item["attempt"])
        if item.get("sending"):
            await self._settle(key, message, Failed(
                "outcome_unknown", "the send was cut off before WeChat's answer was known"),
                attempt)
            return False
        if time.time() - float(item["since"]) > self.settings.reply_wait_days * 86400:
            await self._settle(key, message, Failed(
                "window_expired_timeout", f"the customer did not write within "
                f"{self.settings.reply_wait_days:g} days"), attempt)
            return False
        interacted = await self.state.last_interaction(account_id, customer)
        if interacted is None or interacted <= float(item["held_at"]) - INTERACTION_GRAIN_S:
            return None
        account = self.accounts.find(account_id)
        if account is None:
            await self._settle(key, message, Failed("account_unknown"), attempt)
            return False
        await self.state.waiting.put(key, {**item, "sending": True})
        try:
            answer = await self.client.send(account, body_of(message, account))
        except ApiRefused as exc:
            if exc.errcode in WINDOW_CLOSED:
                await self.state.waiting.put(key, {**item, "held_at": time.time()})
                return None
            await self._settle(key, message, Failed(_refusal(exc), str(exc)), attempt)
            return False
        except ApiError:
            await self.state.waiting.put(key, item)  # tried again on the next pass
            return None
        self.sent_ids.append(str(message.id))
        await self._settle(key, message, Sent(str(answer.get("msgid") or "") or None), attempt)
        return True

    async def _settle(self, key: str, message: OutboundMessage, outcome: Sent | Failed,
                      attempt: int) -> None:
        await self.kit.report(message, outcome, attempt=attempt)
        await self.state.waiting.delete(key)
        WAITING.labels("wechat").dec()


def _configured_accounts() -> WechatAccounts:
    """The accounts of `INTAKE_CONFIG`, for a sender built without the service's."""
    doc = load_document(IntakeSettings().config)
    section = doc.section("channels", "wechat") or {}
    return WechatAccounts.model_validate(section)


def _refusal(exc: ApiRefused) -> str:
    words = REFUSALS.get(exc.errcode)
    return f"{exc.errcode} {words}" if words else str(exc)[:200]
