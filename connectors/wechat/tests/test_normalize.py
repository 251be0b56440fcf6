"""normalize.py: parsed callbacks to messages, pure (no I/O, no clock)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from connectors.wechat.normalize import Callback, Enrichment, Media, to_message
from intake import Attachment

NOW = datetime(2024, 12, 5, 8, 0, tzinfo=UTC)


def cb(kind: str = "official_account", **fields: str) -> Callback:
    base = {"ToUserName": "gh_x", "FromUserName": "oUser", "CreateTime": "1733385600"}
    return Callback(fields={**base, **fields}, account="acct", account_kind=kind,
                    verified=kind != "plain", corp_id="wxcorp" if kind == "wecom_app" else None)


def message(callback: Callback, enrichment: Enrichment | None = None) -> dict[str, object]:
    built = to_message(callback, message_id=uuid.uuid4(), received_at=NOW, trace_id="t",
                       raw="sha256:" + "0" * 64, enrichment=enrichment)
    return built.model_dump(mode="json")


def test_voice_carries_its_recognition_as_text() -> None:
    m = message(cb(MsgType="voice", MediaId="m", Recognition="我要退货", MsgId="1"))
    assert m["text"] == "我要退货" and m["kind"] == "message"


@pytest.mark.parametrize("kind", ["video", "shortvideo", "image"])
def test_media_types_carry_their_attachment(kind: str) -> None:
    attachment = Attachment(filename="v.mp4", content_type="video/mp4", size=3,
                            sha256="a" * 64, blob="sha256:" + "a" * 64)
    m = message(cb(MsgType=kind, MediaId="m", MsgId="2"),
                Enrichment(media=[Media(attachment=attachment)]))
    assert [a["filename"] for a in m["attachments"]] == ["v.mp4"]  # type: ignore[union-attr]
    assert m["flags"] == []


def test_an_event_key_has_sender_time_and_type_and_no_ticket_thread() -> None:
    m = message(cb(MsgType="event", Event="SCAN", EventKey="store42", Ticket="T"))
    assert m["kind"] == "event" and m["thread"] is None
    assert m["idempotency_key"] == "wechat:acct:oUser:1733385600:scan"
    assert m["event"] == {"type": "scan", "key": "store42", "data": {"ticket": "T"}}


def test_a_follow_through_a_qr_code_keeps_the_scene_without_its_prefix() -> None:
    m = message(cb(MsgType="event", Event="subscribe", EventKey="qrscene_42", Ticket="T"))
    assert m["event"] == {"type": "subscribe_scan", "key": "42", "data": {"ticket": "T"}}


def test_a_kf_session_event_is_keyed_by_the_kf_account() -> None:
    m = message(cb(MsgType="event", Event="kf_create_session", KfAccount="test1@test"))
    assert m["event"]["key"] == "test1@test"  # type: ignore[index]


def test_msg_ids_stay_strings_whatever_their_size() -> None:
    m = message(cb(MsgType="text", Content="x", MsgId="18446744073709551615"))
    assert m["idempotency_key"] == "wechat:acct:18446744073709551615"
    assert m["channel_data"]["msg_id"] == "18446744073709551615"  # type: ignore[index]


def test_a_wecom_sender_is_scoped_by_corp_and_an_unionid_is_verified() -> None:
    wecom = message(cb("wecom_app", MsgType="text", Content="x", MsgId="3"))
    assert wecom["sender"]["identities"] == [  # type: ignore[index]
        {"kind": "wecom_userid", "value": "wxcorp:oUser", "verified": True}]
    plain = message(cb("plain", MsgType="text", Content="x", MsgId="4"),
                    Enrichment(unionid="uU"))
    assert plain["sender"]["identities"] == [  # type: ignore[index]
        {"kind": "wechat_openid", "value": "oUser", "verified": False},
        {"kind": "wechat_unionid", "value": "uU", "verified": True}]


def test_a_bad_create_time_leaves_occurred_at_empty() -> None:
    assert message(cb(MsgType="text", Content="x", MsgId="5", CreateTime="9" * 30))[
        "occurred_at"] is None
