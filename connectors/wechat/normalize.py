"""Pure functions from a parsed WeChat callback to an intake Message; no I/O, no clock.

A callback is the flat mapping of the `<xml>` root's children (`Callback.fields`); nested
elements (an event's `ScanCodeInfo`) become `Parent.Child` keys. WeChat's documentation:
official accounts, 接收普通消息 / 接收事件推送; WeCom, 接收消息与事件.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from intake import Attachment, Event, Identity, Message, Sender, Thread

MEDIA_TYPES = frozenset({"image", "voice", "video", "shortvideo"})
# Events that reopen a customer's 48-hour reply window (the customer interacted).
INTERACTIONS = frozenset({"subscribe", "subscribe_scan", "scan", "click", "view",
                          "enter_agent", "scancode_push", "scancode_waitmsg"})
MESSAGE_TYPES = frozenset({"text", "location", "link", "file", "miniprogrampage",
                           *MEDIA_TYPES})


@dataclass(frozen=True)
class Callback:
    """A verified, decrypted, parsed callback: what the edge knows about one XML body.

    `account_kind` is `official_account` or `wecom_app`; `corp_id` is a WeCom app's CorpID;
    `verified` is true when a signature covers the content (every mode but plain).
    """

    fields: dict[str, str]
    account: str
    account_kind: str
    verified: bool
    corp_id: str | None = None
    # wechatpy's name for the event (`parse_message(...).event`), when it knows the event.
    wechat_event: str | None = None

    @property
    def msg_type(self) -> str:
        return self.fields.get("MsgType", "").strip().lower()

    @property
    def sender(self) -> str:
        return self.fields.get("FromUserName", "")

    @property
    def is_event(self) -> bool:
        return self.msg_type == "event"

    @property
    def event_type(self) -> str:
        """wechatpy's event type name (`subscribe_scan` for a follow through a QR code); for
        an event wechatpy does not know, the `Event` element lowercased."""
        if self.wechat_event:
            return self.wechat_event
        event = self.fields.get("Event", "").strip().lower()
        if event == "subscribe" and self.fields.get("EventKey", "").startswith("qrscene_"):
            return "subscribe_scan"
        return event

    @property
    def idempotency_key(self) -> str:
        """`wechat:<account>:<MsgId>`, events `…:<FromUserName>:<CreateTime>:<Event>`.

        MsgId is a 64-bit integer that a double cannot hold: it stays a string.
        """
        msg_id = self.fields.get("MsgId") or self.fields.get("MsgID")
        if msg_id and not self.is_event:
            return f"wechat:{self.account}:{msg_id.strip()}"
        return (f"wechat:{self.account}:{self.sender}:{self.fields.get('CreateTime', '')}:"
                f"{self.event_type or self.msg_type}")

    @property
    def needs_media(self) -> bool:
        return self.msg_type in MEDIA_TYPES and bool(self.fields.get("MediaId"))

    @property
    def interaction(self) -> bool:
        """The customer interacted: a message, or a follow, scan or menu event."""
        return not self.is_event or self.event_type in INTERACTIONS

    @property
    def occurred_at(self) -> datetime | None:
        try:
            return datetime.fromtimestamp(int(self.fields.get("CreateTime", "")), UTC)
        except (ValueError, OverflowError, OSError):
            return None


@dataclass(frozen=True)
class Media:
    """What became of a message's media: the stored attachment, or why there is none."""

    attachment: Attachment | None = None
    missing_reason: str | None = None


@dataclass(frozen=True)
class Enrichment:
    """What the work queue learnt after the answer: the sender's unionid, the media."""

    unionid: str | None = None
    media: list[Media] = field(default_factory=list)


def identities(callback: Callback, unionid: str | None = None) -> list[Identity]:
    if callback.account_kind == "wecom_app":
        return [Identity(kind="wecom_userid", value=f"{callback.corp_id}:{callback.sender}",
                         verified=callback.verified)]
    found = [Identity(kind="wechat_openid", value=callback.sender, verified=callback.verified)]
    if unionid:
        # From WeChat's own API over TLS: proven whatever the callback's mode.
        found.append(Identity(kind="wechat_unionid", value=unionid, verified=True))
    return found


def to_message(callback: Callback, *, message_id: uuid.UUID, received_at: datetime,
               trace_id: str, raw: str | None, enrichment: Enrichment | None = None) -> Message:
    """The message for one callback; `enrichment` carries what the work queue found."""
    enrichment = enrichment or Enrichment()
    common: dict[str, Any] = {
        "id": message_id, "idempotency_key": callback.idempotency_key, "channel": "wechat",
        "account": callback.account,
        "sender": Sender(identities=identities(callback, enrichment.unionid)),
        "occurred_at": callback.occurred_at, "received_at": received_at, "raw": raw,
        "trace_id": trace_id,
    }
    if callback.is_event:
        return Message(kind="event", text="", event=to_event(callback), **common)
    text, flags = describe(callback)
    attachments = []
    for media in enrichment.media:
        if media.attachment is not None:
            attachments.append(media.attachment)
        elif media.missing_reason:
            flags.append("attachment_missing")
            text = _join(text, f"[{callback.msg_type} not downloaded: {media.missing_reason}]")
    channel_data = {"msg_type": callback.msg_type}
    if callback.fields.get("MsgId"):
        channel_data["msg_id"] = callback.fields["MsgId"].strip()
    if callback.fields.get("AgentID"):
        channel_data["agent_id"] = callback.fields["AgentID"].strip()
    return Message(
        kind="message", text=text, attachments=attachments, flags=sorted(set(flags)),  # type: ignore[arg-type]
        thread=Thread(conversation_id=f"wechat:{callback.account}:{callback.sender}"),
        channel_data=channel_data, **common)


def describe(callback: Callback) -> tuple[str, list[str]]:
    """The text a message shows an agent, and its flags."""
    f = callback.fields
    kind = callback.msg_type
    if kind == "text":
        return f.get("Content", ""), []
    if kind == "voice":
        return f.get("Recognition", ""), []
    if kind in MEDIA_TYPES:
        return "", []
    if kind == "location":
        label = f.get("Label", "")
        return _join(label, f"({f.get('Location_X', '')}, {f.get('Location_Y', '')}), "
                            f"scale {f.get('Scale', '')}"), []
    if kind == "link":
        return "\n".join(part for part in (f.get("Title", ""), f.get("Description", ""),
                                           f.get("Url", "")) if part), []
    if kind == "miniprogrampage":
        return "\n".join(part for part in (f.get("Title", ""), f.get("PagePath", ""))
                         if part), []
    if kind == "file":
        return (f"[file {f.get('Title', '')!r}, {f.get('FileTotalLen', '?')} bytes, "
                f"FileKey {f.get('FileKey', '')}, md5 {f.get('FileMd5', '')}: WeChat offers "
                "no download for files]"), ["attachment_missing"]
    return (f"[unsupported WeChat message type {kind!r}; the raw callback is kept]",
            ["unsupported_type"])


def to_event(callback: Callback) -> Event:
    """`{type, key, data}`: wechatpy's event type name and the event's natural key."""
    f = callback.fields
    kind = callback.event_type
    event_key = f.get("EventKey", "")
    data: dict[str, Any] = {}
    key: str | None = event_key or None
    if kind == "subscribe_scan":
        key = event_key.removeprefix("qrscene_")
        data["ticket"] = f.get("Ticket", "")
    elif kind == "scan":
        data["ticket"] = f.get("Ticket", "")
    elif kind in ("subscribe", "unsubscribe", "enter_agent"):
        key = event_key or None
    elif kind == "location":
        key = None
        data = {"latitude": f.get("Latitude", ""), "longitude": f.get("Longitude", ""),
                "precision": f.get("Precision", "")}
    elif kind == "templatesendjobfinish":
        key = f.get("MsgID") or f.get("MsgId")
        data["status"] = f.get("Status", "")
    elif kind in ("kf_create_session", "kf_close_session"):
        key = f.get("KfAccount") or None
    elif kind == "kf_switch_session":
        key = f.get("ToKfAccount") or None
        data = {"from": f.get("FromKfAccount", ""), "to": f.get("ToKfAccount", "")}
    known = {"ToUserName", "FromUserName", "CreateTime", "MsgType", "Event", "EventKey",
             "Ticket", "Latitude", "Longitude", "Precision", "MsgID", "MsgId", "Status",
             "KfAccount", "FromKfAccount", "ToKfAccount"}
    for name, value in f.items():
        if name not in known:
            data[name] = value  # what else the event carried (AgentID, ScanCodeInfo.*, …)
    return Event(type=kind or "unknown", key=key, data=data)


def _join(first: str, second: str) -> str:
    return f"{first}\n{second}" if first else second
