"""Hostile XML at the WeChat callback: XXE, external DTDs, entity expansion and huge bodies,
plain and inside a valid ciphertext, are refused within a second; nothing is fetched or kept."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from connectors.wechat.tests.simulator import PLAIN, SAFE, WECOM, Request, callback
from intake.testing import RecordingPublisher

from .wechat import wechat_edge


def hostile(fake_url: str) -> dict[str, str]:
    body = ("<ToUserName>gh_1111111111aa</ToUserName><FromUserName>o1</FromUserName>"
            "<CreateTime>1</CreateTime><MsgType>text</MsgType>")
    return {
        "xxe_file": ('<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY x SYSTEM '
                     '"file:///etc/passwd">]>' f"<xml>{body}<Content>&x;</Content></xml>"),
        "xxe_http": ('<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY x SYSTEM '
                     f'"{fake_url}/xxe">]><xml>{body}<Content>&x;</Content></xml>'),
        "external_dtd": (f'<?xml version="1.0"?><!DOCTYPE xml SYSTEM "{fake_url}/evil.dtd">'
                         f"<xml>{body}<Content>x</Content></xml>"),
        "parameter_entity": ('<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY % p SYSTEM '
                             f'"{fake_url}/p.dtd"> %p;]><xml>{body}</xml>'),
        "billion_laughs": ('<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY a "aaaaaaaaaa">'
                           + "".join(f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">'
                                     for i in range(9))
                           + f"]><xml>{body}<Content>&j;</Content></xml>"),
    }


CASES = ["xxe_file", "xxe_http", "external_dtd", "parameter_entity", "billion_laughs"]


@pytest.mark.parametrize("account", [PLAIN, SAFE, WECOM], ids=["plain", "in_ciphertext",
                                                               "wecom_ciphertext"])
@pytest.mark.parametrize("case", CASES)
async def test_hostile_xml_is_refused_fast_and_fetches_nothing(
        tmp_path: Path, case: str, account: dict[str, str]) -> None:
    publisher = RecordingPublisher()
    async with wechat_edge(tmp_path, publisher) as (client, fake):
        xml = hostile(fake.url)[case]
        if account is not PLAIN:
            xml = xml.replace("gh_1111111111aa", account["original_id"])
        request = callback(account, xml)
        started = time.monotonic()
        response = await client.post(request.path, params=request.query, data=request.body)
        assert time.monotonic() - started < 1.0
        assert response.status == 400, await response.text()
        assert (await response.json())["error"] == "bad_xml"
        assert fake.stray == [], "an entity made the connector fetch something"
    assert publisher.messages == []


@pytest.mark.parametrize("account", [PLAIN, SAFE], ids=["plain", "safe"])
async def test_a_ten_megabyte_body_is_refused_within_a_second(
        tmp_path: Path, account: dict[str, str]) -> None:
    publisher = RecordingPublisher()
    async with wechat_edge(tmp_path, publisher) as (client, _):
        good = callback(account, "<xml/>")
        body = b"<xml><Content>" + b"A" * (10 * 1024 * 1024) + b"</Content></xml>"
        started = time.monotonic()
        response = await client.post(good.path, params=good.query, data=body)
        assert response.status == 413
        assert time.monotonic() - started < 1.0
    assert publisher.messages == []


async def test_a_replayed_signature_with_another_body_is_refused(tmp_path: Path) -> None:
    publisher = RecordingPublisher()
    async with wechat_edge(tmp_path, publisher) as (client, _):
        genuine = callback(PLAIN, "<xml><ToUserName>gh_1111111111aa</ToUserName><FromUserName>"
                                  "o1</FromUserName><CreateTime>1</CreateTime><MsgType>event"
                                  "</MsgType><Event>subscribe</Event></xml>")
        assert (await client.post(genuine.path, params=genuine.query,
                                  data=genuine.body)).status == 200
        forged = Request(genuine.path, genuine.query, genuine.body.replace(b"o1", b"o2"))
        response = await client.post(forged.path, params=forged.query, data=forged.body)
        assert response.status == 403 and (await response.json())["error"] == "replayed_nonce"
    assert [m.sender.identities[0].value for m in publisher.messages] == ["o1"]
