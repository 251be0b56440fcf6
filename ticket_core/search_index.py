"""The search index's write side: a ticket's document, rebuilt in the transaction that changes it.

A ticket's document is its text (`content`: number, subject, tags, customer name, identities
and fields, then its messages in source order) and that text's token stream (`tokens`,
intake/search_text.py); PostgreSQL also gets the stream as a `tsvector`, SQLite's FTS5 table
follows `tokens` by triggers (migration 0011). `reindex` rebuilds the documents of some tickets
from what the transaction sees, so it is called last in every write that changes searchable
text: the batch writer (both write paths: store.py through `WriteStatements.index_tickets`),
agent replies, a customer's change. A linked ticket (copy, collaborator) shows its primary's
messages, so it is rebuilt with it.

Hooks for what later writers add: notes and ticket fields go into `_document` as more parts
(read them in `reindex` beside the messages); their writers call `reindex_connection(c, [id])`.

One SQL text serves both paths (named `:p0` parameters work in sqlite3 and SQLAlchemy's
`text()`), so the fast path and the Core path write the same rows (tests/test_writes.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from intake.search_text import index_tokens, tsvector

__all__ = ["MAX_DOCUMENT_CHARS", "MAX_MESSAGE_CHARS", "reindex", "reindex_all",
           "reindex_connection", "reindex_database"]

# Each message's first 4,000 characters, the document's first 32,000: a quoted mail thread
# repeats itself, and a tsvector must stay under PostgreSQL's 1 MB.
MAX_MESSAGE_CHARS = 4_000
MAX_DOCUMENT_CHARS = 32_000
CHUNK = 500  # ids per IN list

Run = Callable[[str, dict[str, Any]], Sequence[Any]]
RunMany = Callable[[str, list[dict[str, Any]]], None]

_UPSERT = ("INSERT INTO search_documents (ticket_id, tokens, content{pg_column}) "
           "VALUES (:ticket_id, :tokens, :content{pg_value}) "
           "ON CONFLICT (ticket_id) DO UPDATE SET tokens = excluded.tokens, "
           "content = excluded.content{pg_set} "
           "WHERE search_documents.content <> excluded.content")
UPSERT = {
    "sqlite": _UPSERT.format(pg_column="", pg_value="", pg_set=""),
    "postgresql": _UPSERT.format(pg_column=", document",
                                 pg_value=", CAST(:document AS tsvector)",
                                 pg_set=", document = excluded.document"),
}


def _in(name: str, values: Sequence[Any], params: dict[str, Any]) -> str:
    """`:name0, :name1, …` for an IN list, the values put in `params`."""
    marks = []
    for index, value in enumerate(values):
        params[f"{name}{index}"] = value
        marks.append(f":{name}{index}")
    return ", ".join(marks)


def _json(value: Any) -> Any:
    """A JSON column read through `text()`: SQLite gives its text, PostgreSQL the value."""
    return json.loads(value) if isinstance(value, str) else value


def _field_values(fields: Any) -> list[str]:
    values: list[str] = []
    for value in (fields or {}).values():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str | int | float) and not isinstance(item, bool):
                values.append(str(item))
    return values


def _identity_values(kind: str, value: str) -> list[str]:
    # A Chinese mobile is typed without its country code: index both.
    if kind == "phone" and value.startswith("+86"):
        return [value, value[3:]]
    return [value]


def _document(head: Sequence[str], messages: Iterable[str]) -> str:
    """The text of a ticket's document, cut at MAX_DOCUMENT_CHARS."""
    parts = [" ".join(part for part in head if part)]
    size = len(parts[0])
    for message in messages:
        if size >= MAX_DOCUMENT_CHARS:
            break
        part = message[:MAX_MESSAGE_CHARS]
        parts.append(part)
        size += len(part) + 1
    return "\n".join(parts)[:MAX_DOCUMENT_CHARS]


def reindex(run: Run, run_many: RunMany, dialect: str, ticket_ids: Iterable[str],
            customer_ids: Iterable[str] = ()) -> int:
    """Rebuild the documents of these tickets, of the tickets linked to them and of every
    ticket of these customers (whose name, fields or identities changed). Returns how many."""
    wanted = sorted(set(ticket_ids))
    customers = sorted(set(customer_ids))
    for start in range(0, len(customers), CHUNK):
        params: dict[str, Any] = {}
        sql = (f"SELECT id FROM tickets WHERE customer_id IN "
               f"({_in('c', customers[start:start + CHUNK], params)})")
        wanted.extend(row[0] for row in run(sql, params))
    wanted = sorted(set(wanted))
    count = 0
    for start in range(0, len(wanted), CHUNK):
        count += _reindex_chunk(run, run_many, dialect, wanted[start:start + CHUNK])
    return count


# The tickets (with their customer), their messages (a linked ticket: its primary's) and their
# customers' identities, in one statement: a new ticket's document costs two (this, the upsert).
_SOURCES = """
SELECT 0 AS part, tickets.id AS k, CAST(tickets.number AS TEXT) AS a, tickets.subject AS b,
       CAST(tickets.tags AS TEXT) AS c, tickets.customer_id AS d, tickets.primary_ticket_id AS e,
       customers.name AS f, CAST(customers.fields AS TEXT) AS g,
       NULL AS at1, NULL AS at2, NULL AS at3, 0 AS n, CAST(tickets.fields AS TEXT) AS h
FROM tickets JOIN customers ON customers.id = tickets.customer_id WHERE {tickets}
UNION ALL
SELECT 1, messages.ticket_id, messages.id, messages.subject, messages.text, NULL, NULL, NULL,
       NULL, COALESCE(messages.occurred_at, messages.received_at), messages.received_at,
       messages.persisted_at, 0, NULL
FROM messages WHERE messages.ticket_id IN (
    SELECT COALESCE(tickets.primary_ticket_id, tickets.id) FROM tickets WHERE {tickets})
UNION ALL
SELECT 2, customer_identities.customer_id, customer_identities.kind, customer_identities.value,
       NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, customer_identities.id, NULL
FROM customer_identities WHERE customer_identities.customer_id IN (
    SELECT tickets.customer_id FROM tickets WHERE {tickets})
UNION ALL
SELECT 3, ticket_notes.ticket_id, ticket_notes.id, NULL, ticket_notes.text, NULL, NULL, NULL,
       NULL, ticket_notes.created_at, ticket_notes.created_at, ticket_notes.created_at, 0, NULL
FROM ticket_notes WHERE ticket_notes.ticket_id IN (SELECT tickets.id FROM tickets WHERE {tickets})
"""


def _reindex_chunk(run: Run, run_many: RunMany, dialect: str, ids: Sequence[str]) -> int:
    if not ids:
        return 0
    params: dict[str, Any] = {}
    marks = _in("t", ids, params)
    condition = f"(tickets.id IN ({marks}) OR tickets.primary_ticket_id IN ({marks}))"
    if dialect == "postgresql":
        # Lock the tickets, in id order, before reading their sources: a concurrent writer of
        # one of them (a message, a reply, a rename) then either committed before this read
        # (READ COMMITTED: the next statement sees it) or writes its document after ours.
        run(f"SELECT tickets.id FROM tickets WHERE {condition} ORDER BY tickets.id FOR UPDATE",
            params)
    tickets: list[Any] = []
    messages: list[Any] = []
    identities: dict[str, list[tuple[int, list[str]]]] = {}
    for row in run(_SOURCES.format(tickets=condition), params):
        if row[0] == 0:
            tickets.append(row)
        elif row[0] in (1, 3):  # a message's or an internal note's text (agents search notes)
            messages.append(row)
        else:
            identities.setdefault(row[1], []).append((row[12], _identity_values(row[2], row[3])))
    texts: dict[str, list[tuple[str | None, str]]] = {}
    for row in sorted(messages, key=lambda r: (r[1], r[9], r[10], r[11], r[2])):
        texts.setdefault(row[1], []).append((row[3], row[4]))
    rows = []
    for _, ticket_id, number, subject, tags, customer_id, primary_ticket_id, name, fields, \
            _at1, _at2, _at3, _n, ticket_fields in sorted(tickets, key=lambda r: r[1]):
        known = [value for _, values in sorted(identities.get(customer_id, []))
                 for value in values]
        head = [f"#{number}", subject or "", " ".join(_json(tags) or []), name or "",
                *known, *_field_values(_json(fields)), *_field_values(_json(ticket_fields))]
        content = _document(head, [  # a message's subject when it is not the ticket's
            f"{part}\n{body}" if part and part != subject else body
            for part, body in texts.get(primary_ticket_id or ticket_id, [])])
        tokens = index_tokens(content)
        row = {"ticket_id": ticket_id, "tokens": " ".join(tokens), "content": content}
        if dialect == "postgresql":
            row["document"] = tsvector(tokens)
        rows.append(row)
    if rows:
        run_many(UPSERT[dialect], rows)
    return len(rows)


def reindex_connection(connection: Connection, ticket_ids: Iterable[str],
                       customer_ids: Iterable[str] = ()) -> int:
    """`reindex` on a SQLAlchemy connection (in the caller's write transaction)."""
    def run(sql: str, params: dict[str, Any]) -> Sequence[Any]:
        return connection.execute(text(sql), params).all()

    def run_many(sql: str, rows: list[dict[str, Any]]) -> None:
        connection.execute(text(sql), rows)

    return reindex(run, run_many, connection.dialect.name, ticket_ids, customer_ids)


def _rebuild(connection: Connection, ticket_ids: Sequence[str]) -> int:
    """Write these tickets' documents anew, even where the text is unchanged (a new
    tokenizer makes new tokens of the same text)."""
    params: dict[str, Any] = {}
    connection.execute(text("DELETE FROM search_documents WHERE ticket_id IN "
                            f"({_in('t', ticket_ids, params)})"), params)
    return reindex_connection(connection, ticket_ids)


async def reindex_all(store: Any, batch: int = CHUNK) -> int:
    """Rebuild every ticket's document, a transaction per `batch` tickets (`intake search
    reindex`); on SQLite the FTS5 table is rebuilt from the documents first."""
    if store.dialect == "sqlite":
        await store.write(lambda c: c.exec_driver_sql(
            "INSERT INTO search_fts (search_fts) VALUES ('rebuild')"))
    total, after = 0, ""
    while True:
        ids: list[str] = await store.write(lambda c, after=after: [row[0] for row in c.execute(
            text("SELECT id FROM tickets WHERE id > :after ORDER BY id LIMIT :n"),
            {"after": after, "n": batch})])
        if not ids:
            return total
        await store.write(lambda c, ids=ids: _rebuild(c, ids))
        total += len(ids)
        after = ids[-1]


async def reindex_database(url: str) -> int:
    """`intake search reindex`: every document of the database at `url` rebuilt."""
    from .db import make_engine
    from .store import TicketStore  # it imports this module

    engine = make_engine(url)
    store = TicketStore(engine)
    try:
        return await reindex_all(store)
    finally:
        await store.close()
        await engine.dispose()
