"""The agent API's views and bodies for quick replies and follow-up reminders (issue 17);
openapi.py derives their schemas from these classes, as from schemas.py's."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from .schemas import View

ReminderState = Literal["pending", "due", "done", "cancelled"]


class QuickReplyView(View):
    id: str
    title: str
    shortcut: str | None = None
    desks: list[str] = Field(description="the desks it is offered on; empty: every desk")
    text: str = Field(description="with {{placeholders}}, rendered by …/render")
    source: Literal["config", "api"] = Field(
        description="`config`: from `tickets.quick_replies`, read-only; `api`: managed here")
    created_by: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


class QuickReplyPage(View):
    items: list[QuickReplyView]
    next: str | None = Field(description="pass as `cursor` for the next page; null at the end")


class QuickReplyCreate(View):
    """`POST /api/v1/quick-replies` (supervisors for their desks, admins)."""

    title: str = Field(min_length=1, max_length=200)
    shortcut: str | None = Field(default=None, min_length=1, max_length=32)
    desks: list[str] = Field(default_factory=list, max_length=100,
                             description="empty: every desk (admins only)")
    text: str = Field(min_length=1, max_length=10_000)


class QuickReplyPatch(View):
    """`PATCH /api/v1/quick-replies/{id}`: the keys given change."""

    title: str | None = Field(default=None, min_length=1, max_length=200)
    shortcut: str | None = Field(default=None, min_length=1, max_length=32)
    desks: list[str] | None = Field(default=None, max_length=100)
    text: str | None = Field(default=None, min_length=1, max_length=10_000)


class RenderRequest(View):
    """`POST /api/v1/tickets/{id}/quick-replies/{qid}/render`."""

    inputs: dict[str, str] = Field(default_factory=dict, max_length=50,
                                   description="values of the text's `{{input.<name>}}`")


class RenderedView(View):
    text: str


class ReminderCreate(View):
    """`POST /api/v1/tickets/{id}/reminders`: a follow-up (回访) reminder."""

    due_at: datetime = Field(description="when it fires (ISO 8601 with an offset); future")
    note: str | None = Field(default=None, max_length=2000)
    agent_id: str | None = Field(default=None, max_length=36,
                                 description="whose it is; default the caller (the admin "
                                             "token must name one)")


class ReminderPatch(View):
    """`PATCH /api/v1/reminders/{id}`."""

    state: Literal["done", "cancelled"]


class ReminderView(View):
    id: str
    ticket_id: str
    agent_id: str
    due_at: datetime
    note: str | None = None
    state: ReminderState = Field(description="`pending` (not yet due), `due` (fired, not "
                                             "done), `done`, `cancelled`")
    created_by: str | None = None
    created_at: datetime
    fired_at: datetime | None = None


class ReminderPage(View):
    items: list[ReminderView]
    next: str | None = Field(description="pass as `cursor` for the next page; null at the end")


WORKFLOW_MODELS = ("QuickReplyView", "QuickReplyPage", "RenderedView", "ReminderView",
                   "ReminderPage")
WORKFLOW_BODIES = ("QuickReplyCreate", "QuickReplyPatch", "RenderRequest", "ReminderCreate",
                   "ReminderPatch")
