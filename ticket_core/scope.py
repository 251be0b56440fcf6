"""Who is calling and what they may see: the `Principal` of a request and the desk scope.

The auth middleware (api.py) sets the request's principal in `CURRENT`; the query layer
(queries.py, and the few modules that read tables themselves) narrows every read with
`visible_tickets()` and its siblings, so one rule holds for every endpoint:

- a ticket is visible when its desk is in the principal's desks, or when the principal's
  agent is its first-contact agent (首问负责人: read and internal notes only);
- the admin token (`INTAKE_API_TOKEN`) and code outside a request (consumers, the relay, the
  scheduler) see everything: `CURRENT` defaults to `SYSTEM`.

The principal lives in a context variable rather than a parameter of every read: aiohttp runs
the middleware and the handler in one task, so the value set by the middleware is the one the
handler's reads see, and a new endpoint built on the reader is scoped without a line of its
own. Work handed to another thread (the SQLite writer) does not see it: writes are guarded
before they start (`guard_ticket_route`), by the same condition.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import ColumnElement, and_, or_

from .statements import TICKETS

Role = Literal["agent", "supervisor", "admin"]
ROLES: tuple[str, ...] = ("agent", "supervisor", "admin")
_RANK = {role: rank for rank, role in enumerate(ROLES)}
Access = Literal["full", "read"]
# Routes only a role (or one above it) may call, by method and path as registered; the
# endpoints whose rule depends on the body check it themselves (agents_api.py).
ROUTE_ROLES: dict[tuple[str, str], str] = {
    ("GET", "/api/v1/decisions"): "admin",  # every desk's messages, for `intake route replay`
    ("POST", "/api/v1/test-clock"): "admin",  # moves every desk's domain time
    ("POST", "/api/v1/quick-replies"): "supervisor",  # quick_replies.py: their desks' own
    ("PATCH", "/api/v1/quick-replies/{quick_reply_id}"): "supervisor",
    ("DELETE", "/api/v1/quick-replies/{quick_reply_id}"): "supervisor",
    # merge_api.py: agents merge the tickets of their desks (as Zendesk's agents do in their
    # groups); a customer is shared across desks and a merge moves every desk's tickets of
    # the source, so supervisors and admins only.
    ("POST", "/api/v1/tickets/{ticket_id}/merge"): "agent",
    ("POST", "/api/v1/customers/{customer_id}/merge"): "supervisor",
    # An agent of the ticket's desks records the customer's rating (satisfaction_api.py).
    ("POST", "/api/v1/tickets/{ticket_id}/satisfaction"): "agent",
    ("POST", "/api/v1/tickets/{ticket_id}/escalations"): "supervisor",  # escalations_api.py
}


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller: an agent through one of their tokens, or the admin token (no agent)."""

    agent_id: str | None
    token_id: str | None
    role: str
    desks: frozenset[str] | None  # None: every desk

    def has_role(self, role: str) -> bool:
        """Whether this role is `role` or above it (agent < supervisor < admin)."""
        return _RANK.get(self.role, -1) >= _RANK[role]

    def sees_desk(self, desk: str | None) -> bool:
        return self.desks is None or (desk is not None and desk in self.desks)

    @property
    def actor(self) -> str:
        """How history and events name the caller: `agent:<id>` (with `token:<id>`), `admin`."""
        if self.agent_id is None:
            return "admin"
        return f"agent:{self.agent_id}" + (f" token:{self.token_id}" if self.token_id else "")


SYSTEM = Principal(agent_id=None, token_id=None, role="admin", desks=None)
CURRENT: ContextVar[Principal] = ContextVar("intake_principal", default=SYSTEM)


def current() -> Principal:
    return CURRENT.get()


@contextlib.contextmanager
def acting_as(principal: Principal) -> Iterator[None]:
    """Run reads as `principal` (the middleware does this around each request)."""
    token = CURRENT.set(principal)
    try:
        yield
    finally:
        CURRENT.reset(token)


def unscoped() -> contextlib.AbstractContextManager[None]:
    """Read without the caller's scope: after a write that the caller was allowed to make
    moved the ticket out of their desks (a transfer), to answer with the ticket as it is."""
    return acting_as(SYSTEM)


def visible_tickets(principal: Principal | None = None) -> ColumnElement[bool] | None:
    """The condition on `tickets` rows the principal may read; None: no restriction."""
    who = principal or current()
    if who.desks is None:
        return None
    in_desks = TICKETS.c.desk.in_(sorted(who.desks))
    if who.agent_id is None:
        return in_desks
    return or_(in_desks, TICKETS.c.first_contact_agent_id == who.agent_id)


def ticket_access(desk: str | None, first_contact_agent_id: str | None,
                  principal: Principal | None = None) -> Access | None:
    """`full`, `read` (the first-contact agent outside the ticket's desk: read and notes), or
    None (the ticket is out of scope: answer 404, never 403)."""
    who = principal or current()
    if who.sees_desk(desk):
        return "full"
    if who.agent_id is not None and first_contact_agent_id == who.agent_id:
        return "read"
    return None


def visible_desk_column(column: Any, principal: Principal | None = None,
                        ) -> ColumnElement[bool] | None:
    """A condition keeping rows whose desk `column` is in scope (calls); None: no restriction."""
    who = principal or current()
    return None if who.desks is None else column.in_(sorted(who.desks))


def visible_events(desk: Any, ticket_id: Any,
                   principal: Principal | None = None) -> ColumnElement[bool] | None:
    """Event log rows in scope: those of a desk in scope, and those of no desk and no ticket
    (a customer's change: customers are shared across desks)."""
    who = principal or current()
    if who.desks is None:
        return None
    return or_(desk.in_(sorted(who.desks)), and_(desk.is_(None), ticket_id.is_(None)))


def where_visible(query: Any, condition: ColumnElement[bool] | None) -> Any:
    return query if condition is None else query.where(condition)


class DeskNotInScope(PermissionError):
    """An explicit desk outside the caller's desks: `403 desk_not_in_scope`."""

    def __init__(self, desk: str) -> None:
        super().__init__(desk)
        self.desk = desk


class RoleRequired(PermissionError):
    """The caller's role is below the one the action needs: `403 forbidden`."""

    def __init__(self, role: str, action: str) -> None:
        super().__init__(f"{action} requires role {role}")
        self.role = role
        self.action = action


def require_role(role: str, action: str, principal: Principal | None = None) -> Principal:
    who = principal or current()
    if not who.has_role(role):
        raise RoleRequired(role, action)
    return who
