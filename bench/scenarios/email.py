"""Email: mails of about 2 KB over SMTP (one in four with a Chinese RFC 2047 subject and a UTF-8
body, Request Tracker's peer corpus shape) to support@shop.example, on reused connections."""

from __future__ import annotations

import base64

import aiosmtplib

from bench.result import Context
from bench.traffic import connector_scenarios

ACCOUNT = "support@shop.example"
FILLER = ("Hello, the parcel for order {i} arrived with a damaged box and one item missing. "
          "Could you please check and send the missing item? Thank you.\r\n") * 12
FILLER_ZH = ("您好，订单 {i} 的包裹外箱破损，少了一件商品，麻烦核实后补发，谢谢。\r\n") * 12


def mail(tag: str, i: int) -> bytes:
    chinese = i % 4 == 0
    subject = ("=?UTF-8?B?" + base64.b64encode(f"退货申请 {i}".encode()).decode() + "?="
               if chinese else f"Return request {i}")
    body = (FILLER_ZH if chinese else FILLER).format(i=i)
    return (f"From: Bench {i % 500} <bench{i % 500}@example.com>\r\nTo: {ACCOUNT}\r\n"
            f"Subject: {subject}\r\nMessage-ID: <bench-{tag}-{i}@bench.example>\r\n"
            f"Date: Sat, 05 Dec 2026 10:00:00 +0800\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: text/plain; charset=UTF-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
            f"{body}").encode()


class EmailLoad:
    channel = "email"
    weight = 0.5
    max_connections = 16

    def __init__(self) -> None:
        self._idle: list[aiosmtplib.SMTP] = []

    def key_prefix(self, tag: str) -> str:
        # The key is email:<account>:<Message-ID>:<digest>.
        return f"email:{ACCOUNT}:<bench-{tag}-"

    @staticmethod
    def sent_key(stored: str) -> str:
        """`email:<account>:<bench-tag-i@bench.example>:<digest>` -> the key as sent."""
        return stored.split("@bench.example>", 1)[0]

    async def send(self, ctx: Context, tag: str, i: int) -> bool:
        client = self._idle.pop() if self._idle else aiosmtplib.SMTP(
            hostname="127.0.0.1", port=ctx.gateway.ports["email-smtp"], timeout=30)
        try:
            if not client.is_connected:
                await client.connect()
            _, answer = await client.sendmail(f"bench{i % 500}@example.com", [ACCOUNT],
                                              mail(tag, i))
        except (TimeoutError, aiosmtplib.SMTPException, OSError):
            client.close()
            return False
        if len(self._idle) < self.max_connections:
            self._idle.append(client)
        else:
            client.close()
        return answer.startswith("2.0.0") or answer.startswith("OK")


LOAD = EmailLoad()
SCENARIOS = connector_scenarios(LOAD)
