"""The agent API's views and bodies for agents, tokens and notifications (openapi.py derives
their schemas from these classes, as from schemas.py's)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from .schemas import View

RoleName = Literal["agent", "supervisor", "admin"]
PresenceStatus = Literal["online", "away", "offline"]
Capacity = dict[str, int]


class AgentView(View):
    id: str
    name: str
    email: str
    role: RoleName
    desks: list[str]
    skill_groups: list[str]
    capacity: Capacity = Field(description="tickets at once per channel; a channel left out "
                                           "takes the skill group's capacity")
    presence: PresenceStatus
    presence_changed_at: datetime
    created_at: datetime
    updated_at: datetime


class AgentPage(View):
    items: list[AgentView]
    next: str | None = Field(description="pass as `cursor` for the next page; null at the end")


class AgentCreate(View):
    """`POST /api/v1/agents`."""

    name: str = Field(min_length=1, max_length=200)
    email: str = Field(min_length=3, max_length=320)
    role: RoleName = "agent"
    desks: list[str] = Field(default_factory=list, max_length=100)
    skill_groups: list[str] = Field(default_factory=list, max_length=200)
    capacity: Capacity = Field(default_factory=dict)


class AgentPatch(View):
    """`PATCH /api/v1/agents/{id}`: only the keys given change."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    email: str | None = Field(default=None, min_length=3, max_length=320)
    role: RoleName | None = None
    desks: list[str] | None = Field(default=None, max_length=100)
    skill_groups: list[str] | None = Field(default=None, max_length=200)
    capacity: Capacity | None = None


class PresenceChange(View):
    """`PUT /api/v1/agents/{id}/presence`."""

    status: PresenceStatus


class TokenCreate(View):
    """`POST /api/v1/tokens`."""

    agent_id: str = Field(min_length=1, max_length=64)
    desks: list[str] | None = Field(
        default=None, max_length=100,
        description="narrows the agent's desks; absent: all of the agent's desks, as they are "
                    "at each request")
    name: str | None = Field(default=None, max_length=200)
    expires_at: datetime | None = Field(default=None,
                                        description="RFC 3339 with an offset; in the future")


class TokenView(View):
    id: str
    agent_id: str
    name: str | None
    desks: list[str] | None
    expires_at: datetime | None
    created_at: datetime
    revoked_at: datetime | None = None


class TokenPage(View):
    items: list[TokenView]
    next: str | None = Field(description="pass as `cursor` for the next page; null at the end")


class IssuedTokenView(TokenView):
    token: str = Field(description="the bearer token; shown this once, stored only as its "
                                   "SHA-256")


class NotificationView(View):
    id: str
    agent_id: str
    ticket_id: str | None
    kind: str = Field(description="e.g. `ticket.transferred`, `mention`, `sla.warning`")
    payload: dict[str, Any]
    created_at: datetime
    read_at: datetime | None


class NotificationPage(View):
    items: list[NotificationView]
    next: str | None = Field(description="pass as `cursor` for the next page; null at the end")
