"""WeChat callbacks through the real aiohttp handler: generated bodies and query strings, from
genuine signed (and encrypted) callbacks mutated to raw garbage. No 5xx, no exception escapes,
nothing stored from a refused callback."""

from __future__ import annotations

import urllib.parse
from typing import Any

from hypothesis import strategies as st

from connectors.wechat.channel import CHANNEL
from connectors.wechat.tests.simulator import ACCOUNTS, EXAMPLE, callback, url_check
from intake.message import Message
from intake.testing import RecordingPublisher, connector_client

from .edge import Edge
from .harness import Target, hostile_text

publisher = RecordingPublisher()
EDGE = Edge(lambda: connector_client(CHANNEL, EXAMPLE, publisher))
MSG_TYPES = ("text", "image", "voice", "video", "shortvideo", "location", "link", "file",
             "miniprogrampage", "event", "hologram", "", "TEXT")
EVENTS = ("subscribe", "unsubscribe", "SCAN", "CLICK", "VIEW", "LOCATION", "enter_agent",
          "kf_switch_session", "TEMPLATESENDJOBFINISH", "", "new_event")
FIELDS = ("Content", "MediaId", "EventKey", "Ticket", "Recognition", "Label", "Title", "Url",
          "MsgId", "CreateTime", "FromUserName", "ToUserName", "Latitude", "Nested")
account_ids = st.one_of(st.sampled_from(sorted(ACCOUNTS)),
                        st.sampled_from(["nope", "WX1111111111111111", "a" * 200, "%00"]))


def _cdata(value: str) -> str:
    return "<![CDATA[" + value.replace("]]>", "]]]]><![CDATA[>") + "]]>"


@st.composite
def callback_xml(draw: st.DrawFn, account: dict[str, Any]) -> str:
    to_user = draw(st.sampled_from([account["original_id"], "gh_other", ""]))
    parts = [f"<ToUserName>{_cdata(to_user)}</ToUserName>",
             f"<FromUserName>{_cdata(draw(st.sampled_from(['o1', 'o2', '', ' '])))}"
             "</FromUserName>",
             f"<CreateTime>{draw(st.sampled_from(['1733385600', '', '-1', '9' * 30, 'x']))}"
             "</CreateTime>",
             f"<MsgType>{_cdata(draw(st.sampled_from(MSG_TYPES)))}</MsgType>"]
    if draw(st.booleans()):
        parts.append(f"<Event>{_cdata(draw(st.sampled_from(EVENTS)))}</Event>")
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=5)):
        value = draw(hostile_text())
        if name == "Nested":
            parts.append(f"<ScanCodeInfo><ScanType>{_cdata(value)}</ScanType></ScanCodeInfo>")
        else:
            parts.append(f"<{name}>{_cdata(value)}</{name}>")
    if draw(st.booleans()):
        parts.append(f"<MsgId>{draw(st.integers(-(2**70), 2**70))}</MsgId>")
    return "<xml>" + "".join(draw(st.permutations(parts))) + "</xml>"


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, dict[str, str], bytes, str]:
    """(method, account id, query mutations, body or mutation, how to build)."""
    account_id = draw(account_ids)
    account = ACCOUNTS.get(account_id, ACCOUNTS["wx1111111111111111"])
    xml = draw(callback_xml(account))
    how = draw(st.sampled_from(["genuine", "genuine", "mutate_query", "mutate_body",
                                "raw_body", "url_check"]))
    query = draw(st.dictionaries(st.sampled_from(["signature", "msg_signature", "timestamp",
                                                  "nonce", "encrypt_type", "echostr", "openid"]),
                                 hostile_text(20), max_size=2))
    body = draw(st.one_of(st.binary(max_size=300), hostile_text(200).map(
        lambda s: s.encode("utf-8", "surrogatepass")),
        st.sampled_from([b"", b"<xml>", b"<xml><Encrypt>AAAA</Encrypt></xml>", b"\xff\xfe",
                         b"<!DOCTYPE x [<!ENTITY a 'b'>]><xml>&a;</xml>"])))
    return account_id, xml, query, body, how


def check(value: tuple[str, str, dict[str, str], bytes, str]) -> None:
    account_id, xml, query_changes, raw, how = value
    account = ACCOUNTS.get(account_id, ACCOUNTS["wx1111111111111111"])
    before = len(publisher.messages)
    if how == "url_check":
        request = url_check(account, xml[:50])
        query = {**request.query, **query_changes}
        status, _, _ = EDGE.request("GET", f"/wechat/{urllib.parse.quote(account_id)}?"
                                    + urllib.parse.urlencode(query))
        assert len(publisher.messages) == before
        return
    try:
        request = callback(account, xml)
    except (UnicodeEncodeError, ValueError):
        return  # wechatpy cannot encrypt a lone surrogate: nothing a real server sends
    query, body = dict(request.query), request.body
    if how == "mutate_query":
        query.update(query_changes)
    elif how == "mutate_body":
        cut = len(body) // 2
        body = body[:cut] + raw + body[cut:]
    elif how == "raw_body":
        body = raw
    status, _, answer = EDGE.request(
        "POST", f"/wechat/{urllib.parse.quote(account_id)}?" + urllib.parse.urlencode(query),
        data=body)
    if status != 200:
        assert len(publisher.messages) == before, (status, answer[:200])
    for message in publisher.messages[before:]:
        Message.model_validate_json(message.model_dump_json())
        assert message.idempotency_key.startswith(f"wechat:{account_id}:")
    del publisher.messages[:]


def targets() -> list[Target]:
    return [Target("wechat_callback", requests(), check, scale=0.5)]
