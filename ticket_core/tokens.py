"""Agents' API tokens: issuing (shown once, stored as SHA-256), revoking, and resolving a bearer
token to the request's `Principal`, with a short in-process cache.

A token is `itk_` and 43 URL-safe characters (256 random bits). Only `sha256(token)` (hex) is
stored, so a copy of the database grants nothing; it is looked up by that digest (unique
index): a digest of 256 random bits leaks nothing through the lookup's timing, so no constant-
time comparison is needed there (the admin token still gets one, api.py).

The principal joins the token and its agent at every lookup: the agent's role and desks as they
are now, narrowed by the token's `desks` when it has some. Lookups are cached for `cache_s`
(default 2 s) because the agent API's every call needs one; a revocation, or a change of the
agent, empties this process's cache at once, so on a single process `DELETE /api/v1/tokens/{id}`
holds from the very next request. Several replicas do not tell each other: on another replica a
revoked token may still pass for up to `cache_s` (`INTAKE_TICKET_CORE_TOKEN_CACHE_S=0` turns the
cache off, one indexed lookup per request).
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.engine import Connection

from intake.message import utcnow

from .agent_schemas import TokenPage, TokenView
from .agents_db import AGENTS, API_TOKENS
from .queries import TicketReader, decode_cursor, encode_cursor
from .scope import Principal

PREFIX = "itk_"
CACHE_ENTRIES = 10_000


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def new_token() -> str:
    return PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class IssuedToken:
    id: str
    token: str  # shown once, never stored
    created_at: datetime


class TokenNotFound(LookupError):
    pass


def issue_token(connection: Connection, agent_id: str, name: str | None,
                desks: list[str] | None, expires_at: datetime | None) -> IssuedToken:
    """Store a new token's digest for `agent_id` (the caller checked the agent and desks)."""
    token, now = new_token(), utcnow()
    token_id = str(uuid.uuid4())
    connection.execute(API_TOKENS.insert().values(
        id=token_id, agent_id=agent_id, name=name, desks=desks, token_sha256=token_digest(token),
        expires_at=expires_at, created_at=now, revoked_at=None))
    return IssuedToken(id=token_id, token=token, created_at=now)


def revoke_token(connection: Connection, token_id: str) -> None:
    """Mark the token revoked (again: no change); raises TokenNotFound."""
    row = connection.execute(select(API_TOKENS.c.revoked_at).where(
        API_TOKENS.c.id == token_id)).first()
    if row is None:
        raise TokenNotFound(token_id)
    if row.revoked_at is None:
        connection.execute(update(API_TOKENS).where(API_TOKENS.c.id == token_id)
                           .values(revoked_at=utcnow()))


def token_view(row: Any) -> TokenView:
    return TokenView(id=row.id, agent_id=row.agent_id, name=row.name, desks=row.desks,
                     expires_at=row.expires_at, created_at=row.created_at,
                     revoked_at=row.revoked_at)


async def list_tokens(reader: TicketReader, agent_id: str | None, limit: int,
                      cursor: str | None) -> TokenPage:
    """Tokens (never their value), newest first; raises CursorInvalid."""
    query = select(API_TOKENS)
    if agent_id is not None:
        query = query.where(API_TOKENS.c.agent_id == agent_id)
    if cursor:
        at, last = decode_cursor(cursor)
        query = query.where(or_(API_TOKENS.c.created_at < at, and_(
            API_TOKENS.c.created_at == at, API_TOKENS.c.id < last)))
    query = query.order_by(API_TOKENS.c.created_at.desc(), API_TOKENS.c.id.desc())
    async with reader._reading() as conn:
        rows = (await conn.execute(query.limit(limit + 1))).all()
    items = [token_view(row) for row in rows[:limit]]
    following = encode_cursor(items[-1].created_at, items[-1].id) if len(rows) > limit else None
    return TokenPage(items=items, next=following)


class TokenRegistry:
    """Resolves agents' bearer tokens to principals for the auth middleware."""

    def __init__(self, reader: TicketReader, cache_s: float = 2.0) -> None:
        self.reader = reader
        self.cache_s = cache_s
        # digest → (principal or None for "no such token", expires_at, cached at)
        self._cache: dict[str, tuple[Principal | None, datetime | None, float]] = {}

    def invalidate(self) -> None:
        """Forget every cached lookup: after a revocation or a change of an agent."""
        self._cache.clear()

    async def principal(self, token: str) -> Principal | None:
        """The principal of a valid token; None for an unknown, revoked or expired one."""
        digest = token_digest(token)
        cached = self._cache.get(digest)
        if cached is not None and time.monotonic() - cached[2] < self.cache_s:
            principal, expires_at = cached[0], cached[1]
        else:
            principal, expires_at = await self._lookup(digest)
            if self.cache_s > 0:
                if len(self._cache) >= CACHE_ENTRIES:
                    self._cache.clear()
                self._cache[digest] = (principal, expires_at, time.monotonic())
        if principal is None or (expires_at is not None and expires_at <= utcnow()):
            return None
        return principal

    async def _lookup(self, digest: str) -> tuple[Principal | None, datetime | None]:
        query = (select(API_TOKENS.c.id, API_TOKENS.c.desks.label("token_desks"),
                        API_TOKENS.c.expires_at, API_TOKENS.c.revoked_at, AGENTS.c.id.label(
                            "agent_id"), AGENTS.c.role, AGENTS.c.desks)
                 .join(AGENTS, AGENTS.c.id == API_TOKENS.c.agent_id)
                 .where(API_TOKENS.c.token_sha256 == digest))
        async with self.reader._reading() as conn:
            row = (await conn.execute(query)).first()
        if row is None or row.revoked_at is not None:
            return None, None
        return principal_of(row.agent_id, row.id, row.role, row.desks,
                            row.token_desks), row.expires_at


def registry_for(reader: TicketReader) -> TokenRegistry:
    """The one registry of a store: the auth middleware resolves through it, and the agent and
    token endpoints empty its cache after a change."""
    registry: TokenRegistry | None = getattr(reader, "_token_registry", None)
    if registry is None:
        registry = TokenRegistry(reader)
        reader._token_registry = registry  # type: ignore[attr-defined]
    return registry


def principal_of(agent_id: str, token_id: str | None, role: str, agent_desks: list[str],
                 token_desks: list[str] | None) -> Principal:
    """An admin agent works every desk unless the token names some; anyone else their own
    desks, narrowed by the token's."""
    desks: frozenset[str] | None = (None if role == "admin" else frozenset(agent_desks or []))
    if token_desks is not None:
        desks = frozenset(token_desks) if desks is None else desks & frozenset(token_desks)
    return Principal(agent_id=agent_id, token_id=token_id, role=role, desks=desks)
