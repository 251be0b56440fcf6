"""Email: mails of about 2 KB over SMTP (one in four with a Chinese RFC 2047 subject and a UTF-8
body, Request Tracker's peer corpus shape) to support@shop.example, on reused connections; and
`email-large`: mails with a 30 MiB attachment one at a time, for their time to ticket and the
email service's peak RSS."""

from __future__ import annotations

import base64

import aiosmtplib

from bench.result import Context, Result, Scenario
from bench.traffic import connector_scenarios, drive

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

    def build(self, tag: str, i: int) -> bytes:
        return mail(tag, i)

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
                                              self.build(tag, i))
        except (TimeoutError, aiosmtplib.SMTPException, OSError):
            client.close()
            return False
        if len(self._idle) < self.max_connections:
            self._idle.append(client)
        else:
            client.close()
        return answer.startswith("2.0.0") or answer.startswith("OK")


ATTACHMENT_BYTES = 30 * 1024 * 1024


class LargeMailLoad(EmailLoad):
    """A mail with a 30 MiB binary attachment (40 MiB of base64 on the wire)."""

    weight = 0.0  # not part of the mixed scenario
    max_connections = 1

    def __init__(self) -> None:
        super().__init__()
        self._attachment = base64.encodebytes(bytes(range(256)) * (ATTACHMENT_BYTES // 256))

    def build(self, tag: str, i: int) -> bytes:
        head = mail(tag, i).split(b"Content-Type: text/plain", 1)[0]
        return (head + b"Content-Type: multipart/mixed; boundary=\"big\"\r\n\r\n"
                b"--big\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\nThe scan.\r\n"
                b"--big\r\nContent-Type: application/pdf; name=\"scan.pdf\"\r\n"
                b"Content-Transfer-Encoding: base64\r\n\r\n"
                + self._attachment.replace(b"\n", b"\r\n") + b"--big--\r\n")


class LargeAttachment(Scenario):
    """Time to ticket of a 30 MiB-attachment mail and the email service's RSS while it passes."""

    name = "email-large"
    order = 65
    default = False  # `SCENARIO=email` runs it; `make bench` (all) leaves it out

    async def run(self, ctx: Context) -> list[Result]:
        n = ctx.n(5, 1)
        ctx.log(f"{self.name}: {n} mails with a 30 MiB attachment, one at a time")
        await ctx.rss.wait_quiet()
        ctx.rss.sample()
        before = ctx.rss.last.get("email", 0.0)
        result = await drive(ctx, [LARGE], "large", n, concurrency=1, scenario=self.name,
                             load_label="30 MiB, C=1")
        peak = result.rss_mb.get("email", 0.0)
        result.extra.update({"attachment_mb": ATTACHMENT_BYTES / 2**20,
                             "email_rss_before_mb": round(before, 1),
                             "email_rss_peak_mb": round(peak, 1),
                             "email_rss_growth_per_attachment": round(
                                 (peak - before) * 2**20 / ATTACHMENT_BYTES, 2)})
        ctx.log(f"{self.name}: email RSS {before:.0f} MB before, {peak:.0f} MB at peak "
                f"({(peak - before) * 2**20 / ATTACHMENT_BYTES:.2f} x the attachment)")
        return [result]


LOAD = EmailLoad()
LARGE = LargeMailLoad()
SCENARIOS = [*connector_scenarios(LOAD), LargeAttachment()]
