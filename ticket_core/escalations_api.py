"""The escalation endpoints (issue 17) and their OpenAPI paths:

- `POST /api/v1/tickets/{id}/escalations {"timeline", "note"}`: supervisors and admins raise a
  timeline of the rules on a `complaint` ticket (`422 not_a_complaint`, `422
  unknown_timeline`, `409 escalation_active` while one runs, `422 note_required`); `201`, the
  ticket (read unscoped: the first step may move it out of the caller's desks);
- `POST /api/v1/tickets/{id}/escalations/{escalation_id}/advance {"note"}`: the agents of the
  current step's group complete a `manual` step; supervisors and admins may too; anyone else
  `403 not_a_member` (moved here from timing_api.py, where only the admin token existed).

A step that moves the ticket leaves it in the target group's queue; an assigner round runs
before answering, so an automatic group has assigned it by then (escalations.py).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import Field

from .api import PREFIX, ApiError, _answers_errors, json_response
from .assigner import Assigner
from .escalations import (
    EscalationActive,
    EscalationRefused,
    NotOfStepGroup,
    advance_step,
    raise_escalation,
)
from .replies import TicketNotFound
from .schemas import AdvanceRequest, View
from .scope import current, unscoped
from .store import TicketStore
from .timeline import EscalationCompleted, EscalationNotFound, StepNotManual
from .timing_api import _body, _ticket_ref


class EscalationRequest(View):
    """`POST /api/v1/tickets/{id}/escalations`."""

    timeline: str = Field(min_length=1, max_length=128, pattern=r"^[^\x00]*$",
                          description="an `escalations` timeline id of the rules")
    note: str | None = Field(default=None, max_length=10_000,
                             description="why: required, not blank; kept as an internal note")


ESCALATION_BODIES = (EscalationRequest,)


def _note(value: str | None, why: str) -> str:
    note = (value or "").strip()
    if not note or "\x00" in note:
        raise ApiError(422, "note_required", why, {"note": "must not be empty"})
    return note


def _refused(exc: EscalationRefused) -> ApiError:
    if isinstance(exc, EscalationActive):
        return ApiError(409, exc.code, f"Escalation {exc.escalation_id} of this ticket is "
                        "still running: finish it first.",
                        {"escalation_id": exc.escalation_id, "step": exc.step or ""})
    if isinstance(exc, NotOfStepGroup):
        return ApiError(403, exc.code, f"Step {exc.step} is worked by skill group {exc.group}; "
                        "its agents, supervisors and admins may complete it.",
                        {"skill_group": f"member of {exc.group}",
                         "role": "or requires supervisor"})
    messages = {"not_a_complaint": ("Only a ticket of category complaint can be escalated.",
                                    {"category": f"is {exc}, not complaint"}),
                "unknown_timeline": (f"No escalation timeline {exc} in the rules in force.",
                                     {"timeline": "not an escalations id of the rules"})}
    message, fields = messages.get(exc.code, (f"The ticket is {exc}.", {}))
    return ApiError(exc.status, exc.code, message, fields)


def escalation_routes(store: TicketStore) -> list[web.RouteDef]:
    assigner = Assigner(store)

    async def answer(ticket_id: str, status: int = 200) -> web.StreamResponse:
        with unscoped():  # a step may have moved it out of the caller's desks
            ticket = await store.get_ticket(ticket_id)
        if ticket is None:
            raise ApiError(404, "ticket_not_found", f"No ticket {ticket_id}.")
        response = json_response(ticket)
        response.set_status(status)
        return response

    @_answers_errors
    async def raise_one(request: web.Request) -> web.StreamResponse:
        ticket_ref = _ticket_ref(request)
        body = await _body(request, EscalationRequest)
        note = _note(body.note, "Say why the complaint is escalated: a note is required.")
        principal = current()
        now, timelines = store.clock.now(), store.timelines
        try:
            ticket_id = await store.write(lambda c: raise_escalation(
                c, ticket_ref, body.timeline, note, now, timelines, principal.actor))
        except TicketNotFound as exc:
            raise ApiError(404, "ticket_not_found", f"No ticket {ticket_ref}.") from exc
        except EscalationRefused as exc:
            raise _refused(exc) from exc
        await assigner.run_once()  # the first step's group's strategy
        return await answer(ticket_id, 201)

    @_answers_errors
    async def advance(request: web.Request) -> web.StreamResponse:
        ticket_ref = _ticket_ref(request)
        escalation_id = request.match_info["escalation_id"]
        body = await _body(request, AdvanceRequest, empty_ok=True)
        note = _note(body.note, "Say why the step is done: a note is required.")
        principal = current()
        now, timelines = store.clock.now(), store.timelines
        try:
            ticket_id = await store.write(lambda c: advance_step(
                c, ticket_ref, escalation_id, note, now, timelines, principal))
        except TicketNotFound as exc:
            raise ApiError(404, "ticket_not_found", f"No ticket {ticket_ref}.") from exc
        except EscalationNotFound as exc:
            raise ApiError(404, "escalation_not_found", f"Ticket {ticket_ref} has no "
                           f"escalation {escalation_id}.") from exc
        except EscalationCompleted as exc:
            raise ApiError(409, "escalation_completed", "Every step of this escalation is "
                           "done.") from exc
        except StepNotManual as exc:
            raise ApiError(409, "step_not_manual", f"Step {exc.step} is done when the ticket "
                           f"is {exc.done_when.replace('_', ' ')}, not by hand.",
                           {"step": exc.step}) from exc
        except EscalationRefused as exc:
            raise _refused(exc) from exc
        await assigner.run_once()  # the next step's group's strategy
        return await answer(ticket_id)

    return [
        web.post(f"{PREFIX}/tickets/{{ticket_id}}/escalations", raise_one),
        web.post(f"{PREFIX}/tickets/{{ticket_id}}/escalations/{{escalation_id}}/advance",
                 advance),
    ]


def escalation_paths(ok: Any, error: Any, ref: str, unauthorized: Any,
                     unavailable: Any) -> dict[str, Any]:
    """The OpenAPI paths of these endpoints (openapi.py passes its helpers)."""
    ticket = {"name": "ticket_id", "in": "path", "required": True,
              "description": "The ticket's id, or its number (digits)",
              "schema": {"type": "string"}}

    def body(model: str, example: dict[str, Any]) -> dict[str, Any]:
        return {"required": True, "content": {"application/json": {
            "schema": {"$ref": ref.format(model=model)}, "example": example}}}

    return {
        "/api/v1/tickets/{ticket_id}/escalations": {"post": {
            "operationId": "raiseEscalation",
            "summary": "Raise an escalation timeline (预警投诉) on a complaint (supervisors)",
            "description": "The ticket's category must be `complaint` and no other escalation "
                           "may be running on it. The first step starts now and moves the "
                           "ticket to its target group's queue (that group's strategy assigns "
                           "it); the timeline's deadlines run from now. The note is kept as an "
                           "internal note named by `escalation.raised`.",
            "parameters": [ticket],
            "requestBody": body("EscalationRequest", {"timeline": "warned_complaint",
                                                      "note": "客户称将向媒体曝光"}),
            "responses": {"201": ok("TicketDetail", "The ticket with its escalation"),
                          "401": unauthorized,
                          "404": error("No such ticket", ["ticket_not_found"]),
                          "409": error("An escalation is running, or the ticket is resolved, "
                                       "closed or merged",
                                       ["escalation_active", "ticket_resolved",
                                        "ticket_closed", "ticket_merged"]),
                          "422": error("No note, not a complaint, an unknown timeline, or "
                                       "the body is not valid",
                                       ["note_required", "not_a_complaint",
                                        "unknown_timeline", "invalid_body"]),
                          "503": unavailable}}},
        "/api/v1/tickets/{ticket_id}/escalations/{escalation_id}/advance": {"post": {
            "operationId": "advanceEscalation",
            "summary": "Complete the escalation's current `manual` step (its group's agents, "
                       "supervisors, admins)",
            "description": "The next step starts now: it moves the ticket to its target "
                           "group's queue and its timer runs. Writes "
                           "`escalation.step_completed` and `escalation.step_started` (or "
                           "`escalation.completed` after the last step).",
            "parameters": [ticket, {"name": "escalation_id", "in": "path", "required": True,
                                    "description": "The escalation's id, or its timeline id",
                                    "schema": {"type": "string"}}],
            "requestBody": body("AdvanceRequest", {"note": "门店已回电客户，客户接受退款"}),
            "responses": {"200": ok("TicketDetail", "The ticket as it now is"),
                          "401": unauthorized,
                          "403": error("Not an agent of the current step's skill group, "
                                       "or a ticket the caller may only read",
                                       ["not_a_member", "read_only_access"]),
                          "404": error("No such ticket or escalation",
                                       ["ticket_not_found", "escalation_not_found"]),
                          "409": error("The current step is not done by hand, or every "
                                       "step is done",
                                       ["step_not_manual", "escalation_completed"]),
                          "422": error("No note, or the body is not valid",
                                       ["note_required", "invalid_body"]),
                          "503": unavailable}}},
    }
