"""The agent API for agents, tokens and notifications.

- `POST /api/v1/agents` (admin; a supervisor for their own desks, role `agent` only),
  `GET /api/v1/agents`, `GET|PATCH /api/v1/agents/{id}` (`me` names the caller),
  `PUT /api/v1/agents/{id}/presence` (the agent, or a supervisor of one of their desks);
- `POST /api/v1/tokens` (admin): shown once, stored as SHA-256; `DELETE /api/v1/tokens/{id}`;
- `GET /api/v1/agents/me/notifications?unread=true`, `POST /api/v1/notifications/{id}/read`.

Desks and skill groups must exist in the rules in force (`store.timelines`, reloaded with the
config); a skill group must be on one of the agent's desks. An agent sees the agents who share
one of their desks, and themself. Domain time (the store's clock) stamps agents and presence;
tokens expire on the real clock (transport time, like every credential).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any, get_args

from aiohttp import web
from sqlalchemy import and_, or_, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection

from intake.message import Channel, utcnow

from .agent_schemas import (
    AgentCreate,
    AgentPage,
    AgentPatch,
    AgentView,
    IssuedTokenView,
    PresenceChange,
    TokenCreate,
)
from .agents_db import AGENTS
from .api import PREFIX, ApiError, _answers_errors, json_response, page_limit
from .notifications import list_notifications, mark_read, visible_notification
from .queries import CursorInvalid, decode_cursor, encode_cursor
from .scope import Principal, current
from .store import TicketStore
from .timers import Timelines
from .timing_api import _body
from .tokens import TokenNotFound, issue_token, list_tokens, registry_for, revoke_token

CHANNELS = frozenset(get_args(Channel))
EMAIL = re.compile(r"^[^@\s\x00]{1,64}@[^@\s\x00]{1,255}$")
MAX_CAPACITY = 1000
AGENT_PARAMS = ("desk", "skill_group", "role", "presence", "limit", "cursor")


def _forbidden(role: str, action: str) -> ApiError:
    return ApiError(403, "forbidden", f"{action} requires role {role}.",
                    {"role": f"requires {role}"})


def _not_in_scope(desks: Iterable[str]) -> ApiError:
    named = ", ".join(sorted(desks))
    return ApiError(403, "desk_not_in_scope", f"Desk {named} is not among your desks.",
                    {"desks": f"not in your scope: {named}"})


def agent_view(row: Any) -> AgentView:
    return AgentView(id=row.id, name=row.name, email=row.email, role=row.role,
                     desks=list(row.desks or []), skill_groups=list(row.skill_groups or []),
                     capacity=dict(row.capacity or {}), presence=row.presence,
                     presence_changed_at=row.presence_changed_at, created_at=row.created_at,
                     updated_at=row.updated_at)


def can_see(principal: Principal, row: Any) -> bool:
    """The admin token and admins see every agent; others those sharing one of their desks."""
    if principal.desks is None or principal.agent_id == row.id:
        return True
    return bool(principal.desks & set(row.desks or []))


def normalize_email(email: str) -> str | None:
    email = email.strip()
    if not EMAIL.match(email):
        return None
    local, _, domain = email.rpartition("@")
    return f"{local}@{domain.lower()}"


def _unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(v.strip() for v in values))


def check_fields(timelines: Timelines, desks: list[str] | None, groups: list[str] | None,
                 capacity: dict[str, int] | None, name: str | None, email: str | None,
                 problems: dict[str, str]) -> None:
    """Add a problem per field that is not valid under the rules in force."""
    if name is not None and (not name.strip() or "\x00" in name):
        problems["name"] = "must not be empty or hold NUL"
    if email is not None and normalize_email(email) is None:
        problems["email"] = "an email address, e.g. li@shop.example"
    for key, values in (("desks", desks), ("skill_groups", groups)):
        if values is not None and any(not v or len(v) > 128 or "\x00" in v for v in values):
            problems[key] = "ids of 1 to 128 characters"
    if problems.keys() & {"desks", "skill_groups"}:
        return
    if desks is not None and timelines.desks is not None:
        unknown = [d for d in desks if d not in timelines.desks]
        if unknown:
            problems["desks"] = ("not in the rules in force: " + ", ".join(unknown)
                                 + "; known: " + ", ".join(sorted(timelines.desks)))
    if groups is not None and timelines.groups is not None:
        unknown = [g for g in groups if g not in timelines.groups]
        if unknown:
            problems["skill_groups"] = ("not in the rules in force: " + ", ".join(unknown))
        elif desks is not None:
            elsewhere = [f"{g} (desk {timelines.groups[g]})" for g in groups
                         if timelines.groups[g] not in desks]
            if elsewhere:
                problems["skill_groups"] = ("not on one of the agent's desks: "
                                            + ", ".join(elsewhere))
    if capacity is not None:
        for channel, value in capacity.items():
            if channel not in CHANNELS:
                problems[f"capacity.{channel}"[:100]] = ("not a channel; one of "
                                                         + ", ".join(sorted(CHANNELS)))
            elif not 0 <= value <= MAX_CAPACITY:
                problems[f"capacity.{channel}"] = f"an integer from 0 to {MAX_CAPACITY}"


class AgentNotFound(LookupError):
    pass


class EmailTaken(ValueError):
    pass


def _agent_row(connection: Connection, agent_id: str) -> Any:
    row = connection.execute(select(AGENTS).where(AGENTS.c.id == agent_id)).first()
    if row is None:
        raise AgentNotFound(agent_id)
    return row


def insert_agent(connection: Connection, body: AgentCreate, now: datetime) -> AgentView:
    email = normalize_email(body.email) or body.email
    if connection.execute(select(AGENTS.c.id).where(AGENTS.c.email == email)).first():
        raise EmailTaken(email)
    agent_id = str(uuid.uuid4())
    connection.execute(AGENTS.insert().values(
        id=agent_id, name=body.name.strip(), email=email, role=body.role,
        desks=_unique(body.desks), skill_groups=_unique(body.skill_groups),
        capacity=dict(body.capacity), presence="offline", presence_changed_at=now,
        created_at=now, updated_at=now))
    return agent_view(_agent_row(connection, agent_id))


def update_agent(connection: Connection, agent_id: str, values: dict[str, Any],
                 now: datetime) -> AgentView:
    row = _agent_row(connection, agent_id)
    changed = {k: v for k, v in values.items() if getattr(row, k) != v}
    if "email" in changed and connection.execute(select(AGENTS.c.id).where(
            AGENTS.c.email == changed["email"], AGENTS.c.id != agent_id)).first():
        raise EmailTaken(changed["email"])
    if "presence" in changed:
        changed["presence_changed_at"] = now
    if changed:
        connection.execute(update(AGENTS).where(AGENTS.c.id == agent_id)
                           .values(**changed, updated_at=now))
    return agent_view(_agent_row(connection, agent_id))


async def _read_agent(store: TicketStore, agent_id: str) -> Any:
    async with store._reading() as conn:
        return (await conn.execute(select(AGENTS).where(AGENTS.c.id == agent_id))).first()


def _agent_id(request: web.Request, principal: Principal) -> str:
    agent_id = request.match_info["agent_id"]
    if agent_id == "me":
        if principal.agent_id is None:
            raise ApiError(404, "agent_not_found", "The admin token (INTAKE_API_TOKEN) belongs "
                           "to no agent: call with an agent's token.")
        return principal.agent_id
    if not agent_id.isascii() or len(agent_id) > 64:
        raise ApiError(404, "agent_not_found", f"No agent {agent_id}.")
    return agent_id


def agent_routes(store: TicketStore) -> list[web.RouteDef]:
    registry = registry_for(store)

    async def visible_agent(request: web.Request) -> tuple[Principal, Any]:
        principal = current()
        agent_id = _agent_id(request, principal)
        row = await _read_agent(store, agent_id)
        if row is None or not can_see(principal, row):
            raise ApiError(404, "agent_not_found", f"No agent {agent_id}.")
        return principal, row

    async def write_agent(work: Any) -> AgentView:
        try:
            result: AgentView = await store.write(work)
        except (EmailTaken, sa_exc.IntegrityError) as exc:
            raise ApiError(409, "email_taken", "Another agent has this email address.",
                           {"email": "taken"}) from exc
        except AgentNotFound as exc:
            raise ApiError(404, "agent_not_found", f"No agent {exc}.") from exc
        registry.invalidate()  # the agent's tokens take its new role and desks at once
        return result

    @_answers_errors
    async def create_agent(request: web.Request) -> web.StreamResponse:
        principal = current()
        if not principal.has_role("supervisor"):
            raise _forbidden("supervisor", "Creating an agent")
        body = await _body(request, AgentCreate)
        if not principal.has_role("admin"):
            if body.role != "agent":
                raise _forbidden("admin", f"Creating an agent with role {body.role}")
            outside = set(body.desks) - (principal.desks or set())
            if outside or not body.desks:
                raise _not_in_scope(outside) if outside else ApiError(
                    422, "invalid_body", "Name the agent's desks (among yours).",
                    {"desks": "at least one of your desks"})
        problems: dict[str, str] = {}
        check_fields(store.timelines, _unique(body.desks), _unique(body.skill_groups),
                     body.capacity, body.name, body.email, problems)
        if problems:
            raise ApiError(422, "invalid_body", "Some fields are not valid.", problems)
        now = store.clock.now()
        view = await write_agent(lambda c: insert_agent(c, body, now))
        response = json_response(view)
        response.set_status(201)
        response.headers["Location"] = f"{PREFIX}/agents/{view.id}"
        return response

    @_answers_errors
    async def get_agent(request: web.Request) -> web.StreamResponse:
        _, row = await visible_agent(request)
        return json_response(agent_view(row))

    @_answers_errors
    async def patch_agent(request: web.Request) -> web.StreamResponse:
        principal, row = await visible_agent(request)
        if not principal.has_role("supervisor"):
            raise _forbidden("supervisor", "Changing an agent")
        patch = await _body(request, AgentPatch)
        given = {k: getattr(patch, k) for k in patch.model_fields_set}
        if any(v is None for v in given.values()):
            raise ApiError(422, "invalid_body", "A field may be left out, never null.",
                           {k: "must not be null" for k, v in given.items() if v is None})
        if not principal.has_role("admin"):
            if row.role != "agent" or "role" in given:
                raise _forbidden("admin", "Changing a supervisor, an admin or a role")
            if "desks" in given:
                changed = set(given["desks"]) ^ set(row.desks or [])
                outside = changed - (principal.desks or set())
                if outside:
                    raise _not_in_scope(outside)
        desks = _unique(given.get("desks", row.desks or []))
        groups = _unique(given.get("skill_groups", row.skill_groups or []))
        problems: dict[str, str] = {}
        check_fields(store.timelines, desks if "desks" in given else None,
                     groups if {"desks", "skill_groups"} & set(given) else None,
                     given.get("capacity"), given.get("name"), given.get("email"), problems)
        if "desks" in given and "skill_groups" not in given and "skill_groups" in problems:
            problems["desks"] = "the agent's skill groups would be on no desk of theirs: " \
                + problems.pop("skill_groups")
        if problems:
            raise ApiError(422, "invalid_body", "Some fields are not valid.", problems)
        values: dict[str, Any] = {}
        if "name" in given:
            values["name"] = given["name"].strip()
        if "email" in given:
            values["email"] = normalize_email(given["email"])
        if "role" in given:
            values["role"] = given["role"]
        if "desks" in given:
            values["desks"] = desks
        if "skill_groups" in given:
            values["skill_groups"] = groups
        if "capacity" in given:
            values["capacity"] = dict(given["capacity"])
        now = store.clock.now()
        return json_response(await write_agent(lambda c: update_agent(c, row.id, values, now)))

    @_answers_errors
    async def put_presence(request: web.Request) -> web.StreamResponse:
        principal, row = await visible_agent(request)
        if principal.agent_id != row.id and not principal.has_role("supervisor"):
            raise _forbidden("supervisor", "Changing another agent's presence")
        body = await _body(request, PresenceChange)
        now = store.clock.now()
        return json_response(await write_agent(
            lambda c: update_agent(c, row.id, {"presence": body.status}, now)))

    @_answers_errors
    async def list_agents(request: web.Request) -> web.StreamResponse:
        principal, query = current(), request.query
        problems = {name: "unknown parameter; known: " + ", ".join(AGENT_PARAMS)
                    for name in query if name not in AGENT_PARAMS}
        values = {name: (query.get(name) or "").strip() or None for name in AGENT_PARAMS}
        if values["role"] is not None and values["role"] not in ("agent", "supervisor",
                                                                  "admin"):
            problems["role"] = "one of agent, supervisor, admin"
        if values["presence"] is not None and values["presence"] not in ("online", "away",
                                                                          "offline"):
            problems["presence"] = "one of online, away, offline"
        limit = page_limit(values["limit"], 50, 200, problems)
        if problems:
            raise ApiError(400, "invalid_parameter", "Some query parameters are not valid.",
                           problems)
        statement = select(AGENTS).order_by(AGENTS.c.created_at, AGENTS.c.id)
        for column in ("role", "presence"):
            if values[column] is not None:
                statement = statement.where(AGENTS.c[column] == values[column])
        if values["cursor"]:
            try:
                at, last = decode_cursor(values["cursor"])
            except CursorInvalid as exc:
                raise ApiError(400, "invalid_parameter", "The cursor is not valid.",
                               {"cursor": "use the `next` value of a previous page"}) from exc
            statement = statement.where(or_(AGENTS.c.created_at > at, and_(
                AGENTS.c.created_at == at, AGENTS.c.id > last)))

        def wanted(row: Any) -> bool:
            # Desks and groups are JSON lists: filtered here, agents are hundreds, not millions.
            return (can_see(principal, row)
                    and (values["desk"] is None or values["desk"] in (row.desks or []))
                    and (values["skill_group"] is None
                         or values["skill_group"] in (row.skill_groups or [])))

        async with store._reading() as conn:
            rows = [row for row in (await conn.execute(statement)).all() if wanted(row)]
        found, more = rows[:limit], len(rows) > limit
        items = [agent_view(row) for row in found]
        following = encode_cursor(found[-1].created_at, found[-1].id) if more else None
        return json_response(AgentPage(items=items, next=following))

    @_answers_errors
    async def create_token(request: web.Request) -> web.StreamResponse:
        if not current().has_role("admin"):
            raise _forbidden("admin", "Creating a token")
        body = await _body(request, TokenCreate)
        row = await _read_agent(store, body.agent_id) if body.agent_id.isascii() else None
        problems: dict[str, str] = {}
        if row is None:
            problems["agent_id"] = f"no agent {body.agent_id}"
        desks = _unique(body.desks) if body.desks is not None else None
        if row is not None and desks is not None:
            allowed = (set(row.desks or []) if row.role != "admin"
                       else set(store.timelines.desks or desks))
            outside = [d for d in desks if d not in allowed]
            if outside:
                problems["desks"] = ("may only narrow the agent's desks ("
                                     + ", ".join(sorted(allowed)) + "): " + ", ".join(outside))
        if body.expires_at is not None and (body.expires_at.tzinfo is None
                                            or body.expires_at <= utcnow()):
            problems["expires_at"] = "a time in the future, with an offset"
        name = body.name.strip() if body.name else None
        if name is not None and "\x00" in name:
            problems["name"] = "must not hold NUL"
        if problems:
            raise ApiError(422, "invalid_body", "Some fields are not valid.", problems)
        issued = await store.write(lambda c: issue_token(c, body.agent_id, name, desks,
                                                         body.expires_at))
        response = json_response(IssuedTokenView(
            id=issued.id, agent_id=body.agent_id, name=name, desks=desks,
            expires_at=body.expires_at, created_at=issued.created_at, token=issued.token))
        response.set_status(201)
        response.headers["Cache-Control"] = "no-store"  # the token is shown once
        return response

    @_answers_errors
    async def get_tokens(request: web.Request) -> web.StreamResponse:
        if not current().has_role("admin"):
            raise _forbidden("admin", "Listing tokens")
        params, query = ("agent_id", "limit", "cursor"), request.query
        problems = {name: "unknown parameter; known: " + ", ".join(params)
                    for name in query if name not in params}
        limit = page_limit(query.get("limit") or None, 50, 200, problems)
        if problems:
            raise ApiError(400, "invalid_parameter", "Some query parameters are not valid.",
                           problems)
        try:
            page = await list_tokens(store, query.get("agent_id") or None, limit,
                                     query.get("cursor") or None)
        except CursorInvalid as exc:
            raise ApiError(400, "invalid_parameter", "The cursor is not valid.",
                           {"cursor": "use the `next` value of a previous page"}) from exc
        return json_response(page)

    @_answers_errors
    async def delete_token(request: web.Request) -> web.StreamResponse:
        if not current().has_role("admin"):
            raise _forbidden("admin", "Revoking a token")
        token_id = request.match_info["token_id"]
        try:
            if not token_id.isascii() or len(token_id) > 64:
                raise TokenNotFound(token_id)
            await store.write(lambda c: revoke_token(c, token_id))
        except TokenNotFound as exc:
            raise ApiError(404, "token_not_found", f"No token {token_id}.") from exc
        finally:
            registry.invalidate()
        return web.Response(status=204)

    @_answers_errors
    async def my_notifications(request: web.Request) -> web.StreamResponse:
        principal, query = current(), request.query
        params = ("unread", "limit", "cursor")
        problems = {name: "unknown parameter; known: " + ", ".join(params)
                    for name in query if name not in params}
        unread_value = (query.get("unread") or "").strip().lower()
        if unread_value not in ("", "true", "false", "1", "0"):
            problems["unread"] = "true or false"
        limit = page_limit(query.get("limit") or None, 50, 200, problems)
        if problems:
            raise ApiError(400, "invalid_parameter", "Some query parameters are not valid.",
                           problems)
        if principal.agent_id is None:
            raise ApiError(404, "agent_not_found", "The admin token (INTAKE_API_TOKEN) belongs "
                           "to no agent: call with an agent's token.")
        try:
            page = await list_notifications(store, principal,
                                            unread=unread_value in ("true", "1"),
                                            limit=limit, cursor=query.get("cursor") or None)
        except CursorInvalid as exc:
            raise ApiError(400, "invalid_parameter", "The cursor is not valid.",
                           {"cursor": "use the `next` value of a previous page"}) from exc
        return json_response(page)

    @_answers_errors
    async def read_notification(request: web.Request) -> web.StreamResponse:
        principal = current()
        notification_id = request.match_info["notification_id"]
        if (principal.agent_id is None or not notification_id.isascii()
                or len(notification_id) > 64
                or not await visible_notification(store, principal, notification_id)):
            raise ApiError(404, "notification_not_found", f"No notification {notification_id}.")
        now = store.clock.now()
        return json_response(await store.write(lambda c: mark_read(c, notification_id, now)))

    return [
        web.post(f"{PREFIX}/agents", create_agent),
        web.get(f"{PREFIX}/agents", list_agents),
        web.get(f"{PREFIX}/agents/me/notifications", my_notifications),
        web.get(f"{PREFIX}/agents/{{agent_id}}", get_agent),
        web.patch(f"{PREFIX}/agents/{{agent_id}}", patch_agent),
        web.put(f"{PREFIX}/agents/{{agent_id}}/presence", put_presence),
        web.post(f"{PREFIX}/tokens", create_token),
        web.get(f"{PREFIX}/tokens", get_tokens),
        web.delete(f"{PREFIX}/tokens/{{token_id}}", delete_token),
        web.post(f"{PREFIX}/notifications/{{notification_id}}/read", read_notification),
    ]
