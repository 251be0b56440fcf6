"""The rating page of a satisfaction request: `GET`/`POST /csat/{token}` on the ticket core's
port, outside /api/v1 and without a bearer token (the link is the credential).

The page is plain HTML in zh-CN: five stars as radio inputs with their labels in a fieldset, a
comment, a submit button; no script (CSP `default-src 'none'`), no referrer (the token is in
the URL), never cached, and nothing of the ticket but its number. `POST` takes the form
(`score`, `comment`) and answers HTML, or JSON `{"score": 1..5, "comment"}` and answers JSON:
`200`, a new answer replacing the score (both in the event log); a bad score `422`, malformed
JSON `400`, an unknown token `404`, an expired or superseded link `410`, and more requests
from one client address than `INTAKE_TICKET_CORE_CSAT_RATE_LIMIT_*` allow `429`. Logs name
the request and ticket ids, never the token or the comment.
"""

from __future__ import annotations

import math
import re
from html import escape
from typing import Any

import orjson
from aiohttp import web
from sqlalchemy import select

from intake.errors import StorageUnavailable
from intake.logging import get_logger
from intake.ratelimit import RateLimiter, client_address

from .satisfaction import (
    MAX_COMMENT,
    RequestGone,
    RequestUnknown,
    answer_by_token,
    request_state,
    token_digest,
)
from .satisfaction_db import SATISFACTION_REQUESTS
from .statements import TICKETS
from .store import TicketStore

PATH = "/csat/{token}"
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,128}$")  # secrets.token_urlsafe's alphabet
HEADERS = {
    # No script at all; the inline stylesheet only; the form posts back here.
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "Referrer-Policy": "no-referrer",  # the token is in the URL
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}
LABELS = {1: "非常不满意", 2: "不满意", 3: "一般", 4: "满意", 5: "非常满意"}
STYLE = """
body{font-family:system-ui,-apple-system,"PingFang SC","Microsoft YaHei",sans-serif;
margin:0;padding:1rem;background:#f5f5f4;color:#1c1917;line-height:1.6}
main{max-width:32rem;margin:0 auto;background:#fff;border-radius:.5rem;padding:1.25rem}
h1{font-size:1.35rem;margin:0 0 .5rem}
fieldset{border:1px solid #d6d3d1;border-radius:.5rem;margin:1rem 0;padding:.5rem 1rem}
legend{font-weight:600;padding:0 .25rem}
.star{display:flex;align-items:center;gap:.5rem;padding:.35rem 0}
.star input{width:1.25rem;height:1.25rem;margin:0}
.glyph{color:#b45309;letter-spacing:.1em}
label{cursor:pointer}
textarea{width:100%;box-sizing:border-box;font:inherit;padding:.5rem;border:1px solid #a8a29e;
border-radius:.375rem}
button{margin-top:1rem;font:inherit;font-weight:600;padding:.6rem 1.5rem;border:0;
border-radius:.375rem;background:#0f766e;color:#fff;cursor:pointer}
input:focus-visible,textarea:focus-visible,button:focus-visible{outline:3px solid #f59e0b;
outline-offset:2px}
.error{color:#b91c1c;font-weight:600}
"""

log = get_logger(component="csat_pages")


def _page(title: str, body: str, status: int = 200) -> web.Response:
    html = (f'<!doctype html>\n<html lang="zh-CN">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f'<meta name="robots" content="noindex">\n<title>{escape(title)}</title>\n'
            f"<style>{STYLE}</style>\n</head>\n<body>\n<main>\n{body}\n</main>\n</body>\n"
            f"</html>\n")
    return web.Response(text=html, status=status, content_type="text/html",
                        charset="utf-8", headers=HEADERS)


def form_page(number: int, *, answered: bool = False, error: str | None = None,
              score: int | None = None, comment: str = "", status: int = 200) -> web.Response:
    """The rating form: stars 1–5 as labelled radio inputs, a comment, a submit button."""
    stars = "\n".join(
        f'<div class="star"><input type="radio" id="score-{n}" name="score" value="{n}"'
        f'{" required" if n == 1 else ""}{" checked" if n == score else ""}>'
        f'<label for="score-{n}"><span class="glyph" aria-hidden="true">'
        f'{"★" * n}{"☆" * (5 - n)}</span> {n} 星 · {LABELS[n]}</label></div>'
        for n in range(1, 6))
    notice = ('<p role="alert" class="error" id="problem">'
              f"{escape(error)}</p>\n") if error else ""
    again = "<p>您已提交过评价；再次提交将替换之前的评分。</p>\n" if answered else ""
    described = ' aria-describedby="problem"' if error else ""
    body = (f"<h1>请为本次服务评分</h1>\n<p>工单 {number}</p>\n{again}{notice}"
            f'<form method="post">\n<fieldset{described}>\n'
            f"<legend>满意度（1 至 5 星）</legend>\n{stars}\n</fieldset>\n"
            f'<label for="comment">留言（选填）</label>\n'
            f'<textarea id="comment" name="comment" rows="4" maxlength="{MAX_COMMENT}">'
            f"{escape(comment)}</textarea>\n"
            f'<button type="submit">提交评价</button>\n</form>')
    return _page(f"服务评价 · 工单 {number}", body, status)


def _notice(status: int, title: str, text: str) -> web.Response:
    return _page(title, f"<h1>{escape(title)}</h1>\n<p>{escape(text)}</p>", status)


def not_found() -> web.Response:
    return _notice(404, "链接无效", "没有找到这个评价链接，请检查链接是否完整。")


def gone(reason: str) -> web.Response:
    text = ("工单已再次处理，我们发送了新的评价链接，请使用最新的链接。" if reason == "superseded"
            else "这个评价链接已过期，感谢您的关注。")
    return _notice(410, "评价链接已失效", text)


def _json_error(status: int, code: str, message: str,
                fields: dict[str, str] | None = None,
                headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps({"error": code, "message": message,
                                           "fields": fields or {}}),
                        status=status, content_type="application/json",
                        headers={**HEADERS, **(headers or {})})


class _Invalid(ValueError):
    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__("invalid")
        self.fields = fields


def parse_answer(data: Any, *, from_form: bool) -> tuple[int, str | None]:
    """(score, comment) of an answer; raises _Invalid naming the fields at fault."""
    if not isinstance(data, dict):
        raise _Invalid({"body": "an object with score and comment"})
    problems: dict[str, str] = {}
    unknown = sorted(set(data) - {"score", "comment"})
    if unknown and not from_form:
        problems.update({name: "unknown field; known: score, comment" for name in unknown})
    raw = data.get("score")
    score = None
    if from_form and isinstance(raw, str) and raw.isascii() and raw.strip().isdigit():
        score = int(raw.strip())
    elif not from_form and isinstance(raw, int) and not isinstance(raw, bool):
        score = raw
    if score is None or not 1 <= score <= 5:
        problems["score"] = "an integer from 1 to 5"
    comment = data.get("comment")
    if comment is not None and not isinstance(comment, str):
        problems["comment"] = "text, or null"
        comment = None
    comment = (comment or "").strip() or None
    if comment is not None and len(comment) > MAX_COMMENT:
        problems["comment"] = f"at most {MAX_COMMENT} characters"
    elif comment is not None and "\x00" in comment:
        problems["comment"] = "must not contain NUL (U+0000)"
    if problems:
        raise _Invalid(problems)
    assert score is not None
    return score, comment


def csat_routes(store: TicketStore, *, per_minute: int = 20, burst: int = 10,
                trust_forwarded_for: bool = False) -> list[web.RouteDef]:
    """The page's routes; each call has its own rate limiter (one per built app)."""
    limiter = RateLimiter(per_minute, burst, max_entries=10_000)

    def limited(request: web.Request, wants_json: bool) -> web.Response | None:
        address = client_address(request.remote, request.headers,
                                 trust_forwarded_for=trust_forwarded_for)
        wait = limiter.take(address)
        if not wait:
            return None
        retry = {"Retry-After": str(max(1, math.ceil(wait)))}
        if wants_json:
            return _json_error(429, "rate_limited", "Too many requests from your address; "
                               "try again later.", headers=retry)
        response = _notice(429, "请求过于频繁", "请稍后再试。")
        response.headers.update(retry)
        return response

    async def lookup(token: str) -> Any:
        """The request and its ticket's number; None for a token no request has."""
        if not _TOKEN.match(token):
            return None
        async with store.engine.connect() as conn:
            return (await conn.execute(
                select(SATISFACTION_REQUESTS, TICKETS.c.number)
                .join(TICKETS, TICKETS.c.id == SATISFACTION_REQUESTS.c.ticket_id)
                .where(SATISFACTION_REQUESTS.c.token_sha256 == token_digest(token)))).first()

    async def show(request: web.Request) -> web.StreamResponse:
        refused = limited(request, wants_json=False)
        if refused is not None:
            return refused
        try:
            found = await lookup(request.match_info["token"])
        except StorageUnavailable:
            return _notice(503, "暂时无法评价", "服务暂时不可用，请稍后再试。")
        if found is None:
            return not_found()
        reason = request_state(found, store.clock.now())
        if reason is not None:
            return gone(reason)
        return form_page(found.number, answered=found.status == "answered")

    async def answer(request: web.Request) -> web.StreamResponse:
        wants_json = request.content_type == "application/json"
        refused = limited(request, wants_json)
        if refused is not None:
            return refused
        token = request.match_info["token"]
        data: Any
        if wants_json:
            try:
                data = orjson.loads(await request.read())
            except orjson.JSONDecodeError:
                return _json_error(400, "malformed_json", "The body is not JSON.",
                                   {"body": "JSON {\"score\": 1..5, \"comment\": …}"})
        else:
            data = dict(await request.post())
        try:
            found = await lookup(token)
            if found is None:
                raise RequestUnknown()
            now = store.clock.now()
            reason = request_state(found, now)
            if reason is not None:
                raise RequestGone(reason)
            score, comment = parse_answer(data, from_form=not wants_json)
            satisfaction = await store.write(lambda c: answer_by_token(
                c, token, score, comment, now))
        except RequestUnknown:
            return (_json_error(404, "not_found", "No satisfaction request has this link.")
                    if wants_json else not_found())
        except RequestGone as exc:
            return (_json_error(410, exc.status, "This link no longer takes answers: "
                                f"{exc.status}.") if wants_json else gone(exc.status))
        except _Invalid as exc:
            if wants_json:
                return _json_error(422, "invalid_body", "Some fields are not valid.",
                                   exc.fields)
            typed = data.get("comment") if isinstance(data, dict) else None
            return form_page(found.number, error="请选择 1 至 5 星后再提交。"
                             if "score" in exc.fields else "留言过长或包含无效字符。",
                             comment=typed if isinstance(typed, str) else "", status=422)
        except StorageUnavailable:
            return (_json_error(503, "storage_unavailable", "Try again shortly.",
                                headers={"Retry-After": "2"}) if wants_json
                    else _notice(503, "暂时无法评价", "服务暂时不可用，请稍后再试。"))
        log.info("satisfaction_answered", request_id=found.id, ticket_id=found.ticket_id,
                 score=score, via="web")
        if wants_json:
            return web.Response(body=orjson.dumps({
                "score": satisfaction["score"], "comment": satisfaction["comment"],
                "answered_at": satisfaction["answered_at"], "request_status": "answered"}),
                content_type="application/json", headers=HEADERS)
        return _page("感谢您的评价", f"<h1>感谢您的评价</h1>\n<p>您为工单 {found.number} "
                     f"打了 {score} 星（{LABELS[score]}）。我们会继续改进服务。</p>")

    return [web.get(PATH, show, allow_head=False), web.post(PATH, answer)]
