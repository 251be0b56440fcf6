"""`intake wechat simulate` and `intake wechat check`: test an installation before WeChat is
pointed at it.

`simulate` builds a callback exactly as WeChat's servers would (signed; encrypted with
wechatpy for a safe, compatible or WeCom account), posts it to the running connector, prints the
answer and then the ticket number the ticket core gave it. `check` fetches an access token for
each account and says plainly what is wrong; neither prints a secret.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import re
import secrets
import time
from typing import Any

import aiohttp
from wechatpy.crypto import WeChatCrypto
from wechatpy.enterprise.crypto import WeChatCrypto as WecomCrypto

from intake import IntakeSettings, load_document

from ..client import check_account
from ..settings import OfficialAccount, WechatAccounts, WechatSettings, WecomApp

DEMO_OPENID = "oDemoOpenid000000000000000"
TYPES = ("text", "image", "voice", "video", "location", "link", "file", "event:subscribe",
         "event:unsubscribe", "event:click", "event:scan", "event:location")


def _accounts() -> WechatAccounts:
    doc = load_document(IntakeSettings().config)
    return WechatAccounts.model_validate(doc.section("channels", "wechat") or {})


def _cdata(value: str) -> str:
    return "<![CDATA[" + value.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def build_xml(account: OfficialAccount | WecomApp, kind: str, sender: str, text: str,
              media_id: str, msg_id: str) -> str:
    to_user = account.corp_id if isinstance(account, WecomApp) else (
        account.original_id or account.app_id)
    head = (f"<ToUserName>{_cdata(to_user)}</ToUserName><FromUserName>{_cdata(sender)}"
            f"</FromUserName><CreateTime>{int(time.time())}</CreateTime>")
    tail = f"<MsgId>{msg_id}</MsgId>"
    if isinstance(account, WecomApp):
        tail += f"<AgentID>{account.agent_id}</AgentID>"
    if kind.startswith("event:"):
        event = kind.split(":", 1)[1]
        key = {"click": "<EventKey><![CDATA[V1001_CONTACT_US]]></EventKey>",
               "scan": "<EventKey><![CDATA[store42]]></EventKey>",
               "location": "<Latitude>23.137466</Latitude><Longitude>113.352425</Longitude>"
                           "<Precision>119.385040</Precision>"}.get(event, "")
        name = event.upper() if event in ("click", "scan", "location") else event
        return (f"<xml>{head}<MsgType><![CDATA[event]]></MsgType>"
                f"<Event>{_cdata(name)}</Event>{key}</xml>")
    body = {
        "text": f"<Content>{_cdata(text)}</Content>",
        "image": f"<PicUrl><![CDATA[http://mmbiz.qpic.cn/demo]]></PicUrl>"
                 f"<MediaId>{_cdata(media_id)}</MediaId>",
        "voice": f"<MediaId>{_cdata(media_id)}</MediaId><Format><![CDATA[amr]]></Format>"
                 f"<Recognition>{_cdata(text)}</Recognition>",
        "video": f"<MediaId>{_cdata(media_id)}</MediaId>"
                 "<ThumbMediaId><![CDATA[thumb]]></ThumbMediaId>",
        "location": "<Location_X>23.134521</Location_X><Location_Y>113.358803</Location_Y>"
                    f"<Scale>20</Scale><Label>{_cdata(text)}</Label>",
        "link": f"<Title>{_cdata(text)}</Title><Description><![CDATA[demo]]></Description>"
                "<Url><![CDATA[https://example.com/]]></Url>",
        "file": f"<Title>{_cdata(text or 'demo.pdf')}</Title><FileKey><![CDATA[k]]></FileKey>"
                "<FileMd5><![CDATA[0]]></FileMd5><FileTotalLen>1024</FileTotalLen>",
    }[kind]
    return f"<xml>{head}<MsgType>{_cdata(kind)}</MsgType>{body}{tail}</xml>"


def signed_request(account: OfficialAccount | WecomApp,
                   xml: str) -> tuple[dict[str, str], bytes]:
    """The query and body WeChat's servers would send for `xml`."""
    timestamp, nonce = str(int(time.time())), str(secrets.randbelow(10**10))
    token = account.token.get_secret_value()

    def sign(*parts: str) -> str:
        return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()

    if not account.encrypted:
        return {"signature": sign(token, timestamp, nonce), "timestamp": timestamp,
                "nonce": nonce}, xml.encode()
    assert account.encoding_aes_key is not None
    key = account.encoding_aes_key.get_secret_value()
    crypto: Any = (WecomCrypto(token, key, account.corp_id) if isinstance(account, WecomApp)
                   else WeChatCrypto(token, key, account.app_id))
    envelope = crypto.encrypt_message(xml, nonce, timestamp)
    found = re.search(r"<Encrypt><!\[CDATA\[(.*?)\]\]></Encrypt>", envelope)
    assert found is not None
    encrypt = found.group(1)
    query = {"msg_signature": sign(token, timestamp, nonce, encrypt), "timestamp": timestamp,
             "nonce": nonce}
    to_user = account.receiver_id if isinstance(account, WecomApp) else (
        account.original_id or account.app_id)
    body = (f"<xml><ToUserName>{_cdata(to_user)}</ToUserName>"
            f"<Encrypt>{_cdata(encrypt)}</Encrypt></xml>")
    if isinstance(account, OfficialAccount):
        query |= {"signature": sign(token, timestamp, nonce), "encrypt_type": "aes"}
    return query, body.encode()


async def simulate(args: argparse.Namespace) -> int:
    account = _accounts().find(args.account)
    if account is None:
        print(f"no WeChat account {args.account!r} in the config", flush=True)
        return 2
    msg_id = str(secrets.randbits(63))
    xml = build_xml(account, args.type, args.sender, args.text, args.media_id, msg_id)
    query, body = signed_request(account, xml)
    url = f"{args.url.rstrip('/')}/wechat/{account.id}"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        try:
            async with session.post(url, params=query, data=body) as response:
                answer = await response.text()
                print(f"{response.status} {answer[:500] or '(empty: success)'}", flush=True)
                if response.status != 200:
                    return 1
        except aiohttp.ClientError as exc:
            print(f"the connector at {url} did not answer: {exc}", flush=True)
            return 1
        if args.type.startswith("event:"):
            print("an event lands on the customer's timeline, not on a ticket", flush=True)
            return 0
        return await _print_ticket(session, f"wechat:{account.id}:{msg_id}", args.wait_s)


async def _print_ticket(session: aiohttp.ClientSession, key: str, wait_s: float) -> int:
    settings = IntakeSettings()
    token = (settings.api_token.get_secret_value() if settings.api_token is not None else
             (settings.data_dir / "api-token").read_text().strip()
             if (settings.data_dir / "api-token").exists() else "")
    url = f"{settings.effective_ticket_core_url.rstrip('/')}/api/v1/tickets"
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            async with session.get(url, params={"idempotency_key": key},
                                   headers={"Authorization": f"Bearer {token}"}) as response:
                if response.status == 200:
                    items = (await response.json()).get("items") or []
                    if items:
                        print(f"ticket {items[0]['number']} ({items[0]['id']})", flush=True)
                        return 0
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.5)
    print(f"no ticket yet for {key} (is the ticket core running?)", flush=True)
    return 1


async def check(args: argparse.Namespace) -> int:
    accounts = _accounts().accounts
    if args.account:
        accounts = [a for a in accounts if a.id == args.account]
        if not accounts:
            print(f"no WeChat account {args.account!r} in the config", flush=True)
            return 2
    settings = WechatSettings()
    failed = 0
    for account in accounts:
        ok, message = await check_account(settings, account)
        failed += not ok
        print(f"{account.id}: {'OK' if ok else 'FAILED'}: {message}", flush=True)
    return 1 if failed else 0


def simulate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("account", help="the account id (channels.wechat.accounts)")
    parser.add_argument("--text", default="你好", help="the message text (or a label)")
    parser.add_argument("--from", dest="sender", default=DEMO_OPENID,
                        help="the customer's openid (WeCom: user id)")
    parser.add_argument("--type", default="text", choices=TYPES)
    parser.add_argument("--media-id", default="DEMO_MEDIA_ID")
    parser.add_argument("--url", default=f"http://127.0.0.1:{WechatSettings().port}",
                        help="where the connector listens")
    parser.add_argument("--wait-s", type=float, default=10.0,
                        help="how long to wait for the ticket")


def check_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("account", nargs="?", help="one account id (default: all)")
