"""Ticket search (the read side): the query on either backend, ranked cursor pages, snippets.

The query is tokens only (intake/search_text.py): PostgreSQL gets a `tsquery` literal
(`'退款' & ('sf12':* <-> 'refund':*)`, every token quoted) matched against the documents'
`tsvector` through its GIN index and ranked by `ts_rank`; SQLite an FTS5 MATCH expression
(`"退款" AND "sf12"* + "refund"*`, every token double-quoted) ranked by `bm25` (negated, so
higher is better on both). Ties, and equal ranks, go to the newer ticket (`created_at`, then
`id`): the cursor is that triple, so pages are keyset pages that never repeat or skip a ticket
while the documents stay as they were.

Scope: `desks` is the caller's scope (None: every desk; an empty list: none) and `desk` the
`?desk=` filter; both restrict the same query, so a scoped token's desks plug in unchanged.
The snippet is the document's text around the first hit, HTML-escaped, each hit in
`<mark>…</mark>`.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
from pydantic import Field
from sqlalchemy import Float, String, and_, or_, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from intake.search_text import Phrase, fts5_match, highlight, tsquery

from .links import read_links
from .queries import CursorInvalid, TicketFilter, TicketReader, _filtered, _ticket_view
from .schemas import TicketView, View
from .statements import TICKETS

__all__ = ["SNIPPET_CHARS", "SearchHit", "SearchPage", "search_tickets"]

SNIPPET_CHARS = 160  # around the first hit: 40 before it, the rest after
SNIPPET_BEFORE = 40

_SQLITE_HITS = (
    "SELECT search_documents.ticket_id AS ticket_id, -bm25(search_fts) AS score "
    "FROM search_fts JOIN search_documents ON search_documents.id = search_fts.rowid "
    "WHERE search_fts MATCH :match")
_PG_HITS = (
    "SELECT ticket_id, CAST(ts_rank(document, CAST(:match AS tsquery)) AS float8) AS score "
    "FROM search_documents WHERE document @@ CAST(:match AS tsquery)")


class SearchHit(TicketView):
    snippet: str = Field(description="the ticket's text around the first hit, HTML-escaped, "
                                     "each hit in <mark>…</mark>; … where text was cut")


class SearchPage(View):
    items: list[SearchHit]
    next: str | None = Field(description="pass as `cursor` for the next page; null at the end")


def encode_search_cursor(score: float, created_at: datetime, ticket_id: str) -> str:
    raw = orjson.dumps([score, created_at.isoformat(), ticket_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_search_cursor(cursor: str) -> tuple[float, datetime, str]:
    """(score, created_at, id) of the last item of a page; raises CursorInvalid."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        score, stamp, ticket_id = orjson.loads(raw)
        created_at = datetime.fromisoformat(stamp)
    except (ValueError, TypeError, orjson.JSONDecodeError) as exc:
        raise CursorInvalid(str(exc)) from exc
    if (not isinstance(score, int | float) or isinstance(score, bool)
            or not math.isfinite(score) or created_at.tzinfo is None
            or not isinstance(ticket_id, str)):
        raise CursorInvalid("malformed cursor")
    return float(score), created_at, ticket_id


def snippet(content: str, phrases: Sequence[Phrase]) -> str:
    """HTML: the text around the first hit, hits in <mark>, the rest escaped."""
    spans = highlight(content, phrases)
    start = max(0, spans[0][0] - SNIPPET_BEFORE) if spans else 0
    end = min(len(content), start + SNIPPET_CHARS)
    if spans and spans[0][1] > end:  # a hit longer than the window: show it whole
        end = spans[0][1]
    parts = ["…" if start > 0 else ""]
    at = start
    for begin, finish in spans:
        if finish <= start or begin >= end:
            continue
        begin, finish = max(begin, start), min(finish, end)
        parts += [html.escape(content[at:begin]), "<mark>",
                  html.escape(content[begin:finish]), "</mark>"]
        at = finish
    parts += [html.escape(content[at:end]), "…" if end < len(content) else ""]
    return " ".join("".join(parts).split())  # one line: newlines and runs of spaces as one


def _hits(dialect: str, phrases: Sequence[Phrase]) -> Any:
    if dialect == "postgresql":
        return text(_PG_HITS).bindparams(match=tsquery(phrases)).columns(
            ticket_id=String, score=Float).cte("hits")
    # MATERIALIZED: bm25() only runs where FTS5 drives the scan, never flattened into the join.
    return text(_SQLITE_HITS).bindparams(match=fts5_match(phrases)).columns(
        ticket_id=String, score=Float).cte("hits").prefix_with("MATERIALIZED")


async def search_tickets(reader: TicketReader, phrases: Sequence[Phrase], *,
                         desks: Sequence[str] | None = None, desk: str | None = None,
                         statuses: tuple[str, ...] = (), limit: int = 50,
                         cursor: str | None = None) -> SearchPage:
    """Tickets matching every phrase, best first, then newest; raises CursorInvalid.

    `desks`: the desks in the caller's scope (None: all); `desk`, `statuses`: the filters of
    `GET /api/v1/tickets` (`open` = not resolved, closed or merged).
    """
    if not phrases or (desks is not None and not desks):
        return SearchPage(items=[], next=None)
    hits = _hits(reader.engine.dialect.name, phrases)
    query = _filtered(select(TICKETS, hits.c.score).join(hits, hits.c.ticket_id == TICKETS.c.id),
                      TicketFilter(desk=desk, status=statuses))
    if desks is not None:
        query = query.where(TICKETS.c.desk.in_(sorted(set(desks))))
    if cursor:
        score, created_at, ticket_id = decode_search_cursor(cursor)
        query = query.where(or_(
            hits.c.score < score,
            and_(hits.c.score == score, or_(
                TICKETS.c.created_at < created_at,
                and_(TICKETS.c.created_at == created_at, TICKETS.c.id < ticket_id)))))
    query = query.order_by(hits.c.score.desc(), TICKETS.c.created_at.desc(),
                           TICKETS.c.id.desc()).limit(limit + 1)
    async with reader._reading() as conn:
        rows = (await conn.execute(query)).all()
        page = rows[:limit]
        ids = [row.id for row in page]
        timers = await reader._timers(conn, ids)
        links = await read_links(conn, page)
        contents = await _contents(conn, ids)
    items = [SearchHit(**_ticket_view(row, timers.get(row.id, []), links.get(row.id, []),
                                      reader.tickets).model_dump(),
                       snippet=snippet(contents.get(row.id, ""), phrases))
             for row in page]
    following = None
    if len(rows) > limit:
        last = page[-1]
        following = encode_search_cursor(last.score, last.created_at, last.id)
    return SearchPage(items=items, next=following)


async def _contents(conn: AsyncConnection, ticket_ids: list[str]) -> dict[str, str]:
    if not ticket_ids:
        return {}
    params = {f"t{i}": ticket_id for i, ticket_id in enumerate(ticket_ids)}
    marks = ", ".join(f":{name}" for name in params)
    rows = await conn.execute(text(
        f"SELECT ticket_id, content FROM search_documents WHERE ticket_id IN ({marks})"), params)
    return {row[0]: row[1] for row in rows}
