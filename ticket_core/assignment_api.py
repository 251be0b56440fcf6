"""The assignment endpoints (issue 17): claim, a queue's next ticket, a supervisor's
assignment, transfer; their bodies and OpenAPI paths.

- `POST /api/v1/tickets/{id}/claim`: the caller's agent takes an unassigned ticket of one of
  their skill groups (`409 already_assigned` with `fields.assignee_id`, `409 at_capacity`,
  `403 not_a_member`);
- `POST /api/v1/queues/{skill_group}/next`: the best waiting ticket of the group (`200`, the
  ticket; `204` when the queue is empty);
- `PUT /api/v1/tickets/{id}/assignee {"agent_id"}`: supervisors and admins (any agent of the
  ticket's desk, capacity notwithstanding; `null` unassigns); an agent only to themself (a
  claim), else `403 forbidden`;
- `POST /api/v1/tickets/{id}/transfer {"to": {…}, "note"}`: `422 note_required` without a note.

The scope guard (api.py) already answered 404 for a ticket outside the caller's desks. The
ticket is re-read inside `scope.unscoped()` after a transfer: the caller may have moved it out
of their own desks (see README "Desk scope").
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import Field, model_validator

from .api import PREFIX, ApiError, _answers_errors, json_response
from .assigner import Assigner
from .assigning import (
    AgentNotOnDesk,
    AgentUnknown,
    AlreadyAssigned,
    AssignmentRefused,
    AtCapacity,
    NotAMember,
    TicketDone,
    claim_ticket,
    next_ticket,
    set_assignee,
)
from .replies import TicketNotFound
from .schemas import View
from .scope import current, unscoped
from .store import TicketStore
from .timing_api import _body, _ticket_ref
from .transfer import TargetInvalid, transfer_ticket


class AssigneeRequest(View):
    """`PUT /api/v1/tickets/{id}/assignee`."""

    agent_id: str | None = Field(max_length=64, pattern=r"^[^\x00]*$",
                                 description="the agent; null unassigns")


class TransferTarget(View):
    agent_id: str | None = Field(default=None, max_length=64)
    skill_group: str | None = Field(default=None, max_length=128)
    desk: str | None = Field(default=None, max_length=128)

    @model_validator(mode="after")
    def exactly_one(self) -> TransferTarget:
        given = [k for k in ("agent_id", "skill_group", "desk") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("name exactly one of agent_id, skill_group, desk")
        if "\x00" in str(getattr(self, given[0])):
            raise ValueError("must not hold NUL (U+0000)")
        return self


class TransferRequest(View):
    """`POST /api/v1/tickets/{id}/transfer`."""

    to: TransferTarget
    note: str | None = Field(default=None, max_length=100_000,
                             description="why: mandatory, kept as an internal note")


def _refused(exc: AssignmentRefused, ticket_ref: str) -> ApiError:
    if isinstance(exc, AlreadyAssigned):
        return ApiError(409, "already_assigned", f"Ticket {ticket_ref} is held by agent "
                        f"{exc.holder}.", {"assignee_id": exc.holder})
    if isinstance(exc, AtCapacity):
        return ApiError(409, "at_capacity", f"You hold {exc.load} tickets on {exc.channel}, "
                        f"your capacity there is {exc.capacity}.",
                        {"capacity": f"{exc.channel}: {exc.load}/{exc.capacity}"})
    if isinstance(exc, NotAMember):
        return ApiError(403, "not_a_member", f"You are not in skill group {exc.group}.",
                        {"skill_group": "not one of yours"})
    if isinstance(exc, TicketDone):
        return ApiError(409, f"ticket_{exc.status}", f"Ticket {ticket_ref} is {exc.status}.")
    if isinstance(exc, AgentNotOnDesk):
        return ApiError(422, "invalid_body", "The agent does not work the ticket's desk.",
                        {"agent_id": f"not on desk {exc}"})
    if isinstance(exc, AgentUnknown):
        return ApiError(422, "invalid_body", f"No agent {exc}.", {"agent_id": "no such agent"})
    return ApiError(409, exc.code, str(exc))


def assignment_routes(store: TicketStore) -> list[web.RouteDef]:
    assigner = Assigner(store)

    def statuses() -> list[str]:
        return list(store.tickets.load_statuses)

    def agent_of_caller(action: str) -> str:
        agent_id = current().agent_id
        if agent_id is None:
            raise ApiError(403, "forbidden", f"{action} needs an agent's token (the admin "
                           "token is no agent).", {"role": "an agent"})
        return agent_id

    async def answer(ticket_id: str, *, scoped: bool = True) -> web.StreamResponse:
        if scoped:
            ticket = await store.get_ticket(ticket_id)
        else:
            with unscoped():
                ticket = await store.get_ticket(ticket_id)
        if ticket is None:
            raise ApiError(404, "ticket_not_found", f"No ticket {ticket_id}.")
        return json_response(ticket)

    async def claim_as(ticket_ref: str, agent_id: str) -> web.StreamResponse:
        now, actor, timelines = store.clock.now(), current().actor, store.timelines
        try:
            ticket_id = await store.write(lambda c: claim_ticket(
                c, ticket_ref, agent_id, now, timelines, statuses(), actor))
        except TicketNotFound as exc:
            raise ApiError(404, "ticket_not_found", f"No ticket {ticket_ref}.") from exc
        except AssignmentRefused as exc:
            raise _refused(exc, ticket_ref) from exc
        return await answer(ticket_id)

    @_answers_errors
    async def claim(request: web.Request) -> web.StreamResponse:
        return await claim_as(_ticket_ref(request), agent_of_caller("Claiming a ticket"))

    @_answers_errors
    async def take_next(request: web.Request) -> web.StreamResponse:
        group = request.match_info["skill_group"]
        agent_id = agent_of_caller("Taking the next ticket")
        groups = store.timelines.groups
        desk = groups.get(group) if groups is not None else None
        if (groups is not None and group not in groups) or (
                desk is not None and not current().sees_desk(desk)):
            raise ApiError(404, "skill_group_not_found", f"No skill group {group[:128]}.")
        now, actor, timelines = store.clock.now(), current().actor, store.timelines
        try:
            ticket_id = await store.write(lambda c: next_ticket(
                c, group, agent_id, now, timelines, statuses(), actor))
        except AssignmentRefused as exc:
            raise _refused(exc, group) from exc
        if ticket_id is None:
            return web.Response(status=204)
        return await answer(ticket_id)

    @_answers_errors
    async def put_assignee(request: web.Request) -> web.StreamResponse:
        ticket_ref = _ticket_ref(request)
        body = await _body(request, AssigneeRequest)
        principal = current()
        if not principal.has_role("supervisor"):
            if body.agent_id is None or body.agent_id != principal.agent_id:
                raise ApiError(403, "forbidden", "Assigning a ticket to someone else requires "
                               "role supervisor.", {"role": "requires supervisor"})
            return await claim_as(ticket_ref, body.agent_id)
        now, actor, timelines = store.clock.now(), principal.actor, store.timelines
        try:
            ticket_id = await store.write(lambda c: set_assignee(
                c, ticket_ref, body.agent_id, now, timelines, statuses(), actor,
                principal.agent_id))
        except TicketNotFound as exc:
            raise ApiError(404, "ticket_not_found", f"No ticket {ticket_ref}.") from exc
        except AssignmentRefused as exc:
            raise _refused(exc, ticket_ref) from exc
        if body.agent_id is None:
            await assigner.run_once()  # back in its queue: its group's strategy may take it
        return await answer(ticket_id)

    @_answers_errors
    async def transfer(request: web.Request) -> web.StreamResponse:
        ticket_ref = _ticket_ref(request)
        body = await _body(request, TransferRequest)
        note = (body.note or "").strip()
        if not note or "\x00" in note:
            raise ApiError(422, "note_required", "Say why: a transfer needs a note.",
                           {"note": "must not be empty"})
        to = {k: v for k, v in body.to.model_dump().items() if v}
        principal = current()
        now, actor, timelines = store.clock.now(), principal.actor, store.timelines
        try:
            ticket_id, waits = await store.write(lambda c: transfer_ticket(
                c, ticket_ref, to, note, now, timelines, actor, principal.agent_id))
        except TicketNotFound as exc:
            raise ApiError(404, "ticket_not_found", f"No ticket {ticket_ref}.") from exc
        except TargetInvalid as exc:
            raise ApiError(422, "invalid_body", f"{exc}.", {"to": str(exc)}) from exc
        except AssignmentRefused as exc:
            raise _refused(exc, ticket_ref) from exc
        if waits:
            await assigner.run_once()  # the new group's strategy, in queue order
        # The caller may have moved it out of their desks: answer with it as it is.
        return await answer(ticket_id, scoped=False)

    return [
        web.post(f"{PREFIX}/tickets/{{ticket_id}}/claim", claim),
        web.post(f"{PREFIX}/queues/{{skill_group}}/next", take_next),
        web.put(f"{PREFIX}/tickets/{{ticket_id}}/assignee", put_assignee),
        web.post(f"{PREFIX}/tickets/{{ticket_id}}/transfer", transfer),
    ]


ASSIGNMENT_BODIES = (AssigneeRequest, TransferRequest)


def assignment_paths(ok: Any, error: Any, ref: str, unauthorized: Any,
                     unavailable: Any) -> dict[str, Any]:
    """The OpenAPI paths of these endpoints (openapi.py passes its helpers)."""
    ticket = {"name": "ticket_id", "in": "path", "required": True,
              "description": "The ticket's id, or its number (digits)",
              "schema": {"type": "string"}}
    not_found = error("No such ticket", ["ticket_not_found"])
    forbidden = error("Not an agent's token, not a member of the ticket's skill group, or "
                      "assigning to someone else without role supervisor",
                      ["forbidden", "not_a_member"])
    held = error("Held by another agent (`fields.assignee_id`), no room on the ticket's "
                 "channel, or the ticket is closed or merged",
                 ["already_assigned", "at_capacity", "ticket_closed", "ticket_merged"])

    def body(model: str, example: dict[str, Any]) -> dict[str, Any]:
        return {"required": True, "content": {"application/json": {
            "schema": {"$ref": ref.format(model=model)}, "example": example}}}

    return {
        "/api/v1/tickets/{ticket_id}/claim": {"post": {
            "operationId": "claimTicket",
            "summary": "Take an unassigned ticket of one of your skill groups (抢单)",
            "description": "Acknowledges it; a `new` ticket becomes `open`; the first agent "
                           "assigned becomes its first contact. No body.",
            "parameters": [ticket],
            "responses": {"200": ok("TicketDetail", "The ticket, now yours"),
                          "401": unauthorized, "403": forbidden, "404": not_found,
                          "409": held, "503": unavailable}}},
        "/api/v1/queues/{skill_group}/next": {"post": {
            "operationId": "takeNextTicket",
            "summary": "Claim the best waiting ticket of a skill group: highest priority, "
                       "then the longest wait",
            "parameters": [{"name": "skill_group", "in": "path", "required": True,
                            "schema": {"type": "string"}}],
            "responses": {"200": ok("TicketDetail", "The ticket, now yours"),
                          "204": {"description": "Nothing waits in this queue"},
                          "401": unauthorized, "403": forbidden,
                          "404": error("No such skill group in your desks",
                                       ["skill_group_not_found"]),
                          "409": error("Every waiting ticket is on a channel where you are "
                                       "at capacity", ["at_capacity"]),
                          "503": unavailable}}},
        "/api/v1/tickets/{ticket_id}/assignee": {"put": {
            "operationId": "assignTicket",
            "summary": "Assign a ticket (supervisors and admins: anyone of its desk, beyond "
                       "capacity; agents: only themselves)",
            "description": "`agent_id: null` puts it back in its skill group's queue. A "
                           "supervisor's assignment acknowledges the ticket.",
            "parameters": [ticket],
            "requestBody": body("AssigneeRequest", {"agent_id": "5b0d8a9e-2a43-4d3c-9a3b"}),
            "responses": {"200": ok("TicketDetail", "The ticket"), "401": unauthorized,
                          "403": forbidden, "404": not_found, "409": held,
                          "422": error("Not a body, an unknown agent, or an agent not on "
                                       "the ticket's desk", ["invalid_body"]),
                          "503": unavailable}}},
        "/api/v1/tickets/{ticket_id}/transfer": {"post": {
            "operationId": "transferTicket",
            "summary": "Transfer (转派) to an agent, a skill group or a desk, with a note",
            "description": "`to` names exactly one of `agent_id`, `skill_group`, `desk` (its "
                           "default skill group). To a group or desk the ticket waits there "
                           "unassigned and that group's strategy assigns it. The note is kept "
                           "as an internal note named by `ticket.transferred`'s `note_id`. "
                           "The first contact stays and is notified.",
            "parameters": [ticket],
            "requestBody": body("TransferRequest", {"to": {"skill_group": "sg_presales"},
                                                    "note": "客户咨询新品价格，转售前"}),
            "responses": {"200": ok("TicketDetail", "The ticket where it is now"),
                          "401": unauthorized, "404": not_found,
                          "409": error("The ticket is closed or merged",
                                       ["ticket_closed", "ticket_merged"]),
                          "422": error("No note, or a target that is not valid",
                                       ["note_required", "invalid_body"]),
                          "503": unavailable}}},
    }
