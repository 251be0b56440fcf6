"""`PATCH /api/v1/tickets/{id}` (status, category, custom fields, tags) and `GET
/api/v1/fields`, with their OpenAPI paths.

Everything given is checked before anything is written, and every problem answers in one `422`:
`invalid_fields` (one message per custom field, keyed by the field's key), `invalid_tags`
(`tags.<i>`, `add_tags.<i>`, …), `unknown_category`. Resolving without the desk's `required:
on_resolve` fields answers `422 fields_required` naming their keys. The changes but the
status are one `ticket.updated` event with `changes: {name: [before, after]}`; a status change
writes its own (status.py), in the same transaction.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web
from sqlalchemy import delete, select, update
from sqlalchemy.engine import Connection

from .api import PREFIX, ApiError, _answers_errors, json_response
from .events import PlannedEvent
from .fields import FieldsInvalid, FieldsRequired
from .lifecycle import (
    InvalidTransition,
    VersionMismatch,
    check_transition,
    etag,
    parse_if_match,
)
from .planner import TicketRef
from .replies import TicketNotFound
from .schemas import FieldsView, TicketPatch
from .scope import current
from .search_index import reindex_connection
from .sla import retarget
from .statements import TICKET_TAGS, TICKETS, CoreWriteStatements
from .status import write_status
from .store import TicketStore, append_events
from .tags import MAX_TAGS, TagsInvalid, normalize_tags
from .tickets_config import TicketsConfig, field_definitions
from .timing_api import _body, _ticket_ref


class PatchInvalid(ValueError):
    def __init__(self, code: str, message: str, problems: dict[str, str]) -> None:
        super().__init__(message)
        self.code, self.message, self.problems = code, message, problems


def _find(connection: Connection, ticket_ref: str) -> Any:
    is_number = ticket_ref.isascii() and ticket_ref.isdigit() and len(ticket_ref) <= 18
    condition = (TICKETS.c.number == int(ticket_ref)) if is_number else (
        TICKETS.c.id == ticket_ref)
    query = select(TICKETS).where(condition)
    if connection.dialect.name == "postgresql":
        query = query.with_for_update()
    ticket = connection.execute(query).first()
    if ticket is None:
        raise TicketNotFound(ticket_ref)
    return ticket


def _tags(current: list[str], patch: TicketPatch) -> list[str] | None:
    """The tags after the patch, or None when it names none; raises TagsInvalid."""
    given = patch.model_fields_set
    if "tags" in given and ({"add_tags", "remove_tags"} & given):
        raise TagsInvalid({"tags": "give tags (replace) or add_tags/remove_tags, not both"})
    if patch.tags is not None:
        tags = normalize_tags(patch.tags)
    elif patch.add_tags is not None or patch.remove_tags is not None:
        problems: dict[str, str] = {}
        added = removed = []
        try:
            added = normalize_tags(patch.add_tags or [], "add_tags")
        except TagsInvalid as exc:
            problems.update(exc.problems)
        try:
            removed = normalize_tags(patch.remove_tags or [], "remove_tags")
        except TagsInvalid as exc:
            problems.update(exc.problems)
        if problems:
            raise TagsInvalid(problems)
        both = sorted(set(added) & set(removed))
        if both:
            raise TagsInvalid({"add_tags": f"also in remove_tags: {', '.join(both)}"})
        tags = [t for t in current if t not in removed] + [
            t for t in added if t not in current]
    else:
        return None
    if len(tags) > MAX_TAGS:
        raise TagsInvalid({"tags": f"at most {MAX_TAGS} tags per ticket (this makes "
                                   f"{len(tags)})"})
    return tags


def patch_ticket(connection: Connection, ticket_ref: str, patch: TicketPatch,
                 config: TicketsConfig, now: datetime, *, if_match: int | None = None,
                 **status_options: Any) -> str:
    """Apply the patch in the caller's transaction; returns the ticket id. Raises
    TicketNotFound, VersionMismatch, InvalidTransition, PatchInvalid, FieldsRequired, each
    before anything is written."""
    ticket = _find(connection, ticket_ref)
    if if_match is not None and ticket.version != if_match:
        raise VersionMismatch(ticket.version)
    if patch.status is not None:
        check_transition(ticket.status, patch.status)
    given = patch.model_fields_set
    values: dict[str, Any] = {}
    problems: dict[str, str] = {}
    code = "invalid_fields"
    if "fields" in given and patch.fields is not None:
        try:
            merged = config.ticket_field_set.merge(ticket.fields, patch.fields, desk=ticket.desk)
            if merged != (ticket.fields or {}):
                values["fields"] = merged
        except FieldsInvalid as exc:
            problems.update(exc.problems)
    current_tags = list(ticket.tags or [])
    try:
        tags = _tags(current_tags, patch)
        if tags is not None and tags != current_tags:
            values["tags"] = tags
    except TagsInvalid as exc:
        code = code if problems else "invalid_tags"
        problems.update(exc.problems)
    if "category" in given and patch.category != ticket.category:
        if patch.category is not None and config.category_ids \
                and patch.category not in config.category_ids:
            code = code if problems else "unknown_category"
            problems["category"] = ("not a category of the config; one of "
                                    + ", ".join(sorted(config.category_ids)))
        else:
            values["category"] = patch.category
    if "priority" in given and patch.priority is not None \
            and patch.priority != ticket.priority:
        values["priority"] = patch.priority
    if problems:
        raise PatchInvalid(code, "Some values cannot be written; `fields` says why for each.",
                           problems)
    if values:
        connection.execute(update(TICKETS).where(TICKETS.c.id == ticket.id)
                           .values(**values, updated_at=now, version=TICKETS.c.version + 1))
        if "tags" in values:
            _replace_tag_rows(connection, ticket.id, current_tags, values["tags"])
        if "tags" in values or "fields" in values:
            reindex_connection(connection, [ticket.id])  # searchable by tags and values
        before = {"fields": ticket.fields or {}, "tags": current_tags,
                  "category": ticket.category, "priority": ticket.priority}
        changes = {key: [before[key], value] for key, value in values.items()}
        ref = TicketRef(id=ticket.id, number=ticket.number, status=ticket.status,
                        customer_id=ticket.customer_id, channel=ticket.channel,
                        desk=ticket.desk)
        append_events(CoreWriteStatements(connection), [PlannedEvent(
            "ticket.updated", now, ref, ticket.customer_id, "agent",
            {"changes": changes, "channel": ticket.channel, "account": ticket.account,
             "subject": ticket.subject})])
        if "category" in values or "priority" in values:  # the SLA policy or targets
            retarget(connection, ticket.id, now, status_options.get("timelines"))
    if patch.status is not None:
        write_status(connection, ticket.id, patch.status, now,
                     fields=config.ticket_field_set, **status_options)
    return str(ticket.id)


def _replace_tag_rows(connection: Connection, ticket_id: str, before: list[str],
                      after: list[str]) -> None:
    gone = [t for t in before if t not in after]
    new = [t for t in after if t not in before]
    if gone:
        connection.execute(delete(TICKET_TAGS).where(TICKET_TAGS.c.ticket_id == ticket_id,
                                                     TICKET_TAGS.c.tag.in_(gone)))
    if new:
        # A tag stored before normalisation came in (the migration fills the table from
        # `tickets.tags`) may be there already: insert only the missing rows.
        have = set(connection.execute(select(TICKET_TAGS.c.tag).where(
            TICKET_TAGS.c.ticket_id == ticket_id, TICKET_TAGS.c.tag.in_(new))).scalars())
        rows = [{"ticket_id": ticket_id, "tag": t} for t in new if t not in have]
        if rows:
            connection.execute(TICKET_TAGS.insert(), rows)


def patch_routes(store: TicketStore) -> list[web.RouteDef]:
    @_answers_errors
    async def change_ticket(request: web.Request) -> web.StreamResponse:
        ticket_ref = _ticket_ref(request)
        patch = await _body(request, TicketPatch)
        if not patch.model_fields_set:
            raise ApiError(422, "invalid_body", "Say what changes: status, category, priority, "
                           "fields, tags, add_tags or remove_tags.", {"body": "no key given"})
        if "status" in patch.model_fields_set and patch.status is None:
            raise ApiError(422, "invalid_body", "Some fields are not valid.",
                           {"status": "a status, not null"})
        if "\\u0000" in patch.model_dump_json():  # JSON writes NUL escaped
            raise ApiError(422, "invalid_body", "A value holds a NUL character.",
                           {"body": "must not contain NUL (U+0000)"})
        config = store.tickets
        if_match = parse_if_match(request.headers.get("If-Match"))
        by_agent = current().agent_id  # the writer's thread does not see the context
        try:
            ticket_id = await store.write(lambda c: patch_ticket(
                c, ticket_ref, patch, config, store.clock.now(), if_match=if_match,
                timelines=store.timelines, by_agent=by_agent))
        except TicketNotFound as exc:
            raise ApiError(404, "ticket_not_found", f"No ticket {ticket_ref}.") from exc
        except VersionMismatch as exc:
            raise ApiError(412, "version_mismatch", f"The ticket is at version {exc.current}: "
                           "someone changed it since you read it.",
                           {"If-Match": f"the ticket's version is {exc.current}"}) from exc
        except InvalidTransition as exc:
            allowed = ", ".join(exc.allowed) or "none (final)"
            raise ApiError(409, "invalid_transition", f"A {exc.current} ticket cannot become "
                           f"{exc.wanted}; allowed: {allowed}.",
                           {"status": f"allowed from {exc.current}: {allowed}"}) from exc
        except PatchInvalid as exc:
            raise ApiError(422, exc.code, exc.message, exc.problems) from exc
        except FieldsRequired as exc:
            raise ApiError(422, "fields_required", "Fill in these fields before resolving "
                           f"the ticket: {', '.join(exc.keys)}.",
                           {key: "required to resolve" for key in exc.keys}) from exc
        ticket = await store.get_ticket(ticket_id)
        assert ticket is not None
        response = json_response(ticket)
        response.headers["ETag"] = etag(ticket.version)
        return response

    @_answers_errors
    async def fields(request: web.Request) -> web.StreamResponse:
        problems = {name: "unknown parameter; known: desk" for name in request.query
                    if name != "desk"}
        if len(request.query.getall("desk", [])) > 1:
            problems["desk"] = "given more than once"
        if problems:
            raise ApiError(400, "invalid_parameter", "Some query parameters are not valid.",
                           problems)
        desk = (request.query.get("desk") or "").strip() or None
        return json_response(FieldsView.model_validate(field_definitions(store.tickets, desk)))

    return [web.patch(f"{PREFIX}/tickets/{{ticket_id}}", change_ticket),
            web.get(f"{PREFIX}/fields", fields)]


def patch_paths(ok: Any, error: Any, ref: str, unauthorized: Any, unavailable: Any,
                bad_parameter: Any) -> dict[str, Any]:
    """The OpenAPI operations of these endpoints (openapi.py passes its helpers)."""
    return {
        "patch": {
            "operationId": "changeTicket",
            "summary": "Change the ticket's status, category, custom fields or tags",
            "description": "The keys given change. `fields` merges into the stored values (null "
                           "removes one); each is checked against `GET /api/v1/fields` for "
                           "the ticket's desk. `tags` replaces the tags; `add_tags` and "
                           "`remove_tags` change some (tags are trimmed, NFKC-normalised, "
                           "Latin letters case-folded, ≤ 50 characters, ≤ 30 per ticket). "
                           "Resolving needs the desk's `required: on_resolve` fields. Writes "
                           "`ticket.updated` with `changes`. A status follows the transition "
                           "table: new → open, pending, on_hold, resolved; open → pending, "
                           "on_hold, resolved; pending → open, on_hold, resolved; on_hold → "
                           "open, pending, resolved; resolved → open (a reopen) or closed; "
                           "closed and merged are final; the same status again changes "
                           "nothing. `If-Match: \"<version>\"` refuses the write (412) when "
                           "the ticket changed since that version.",
            "parameters": [{"name": "ticket_id", "in": "path", "required": True,
                            "description": "The ticket's id, or its number (digits)",
                            "schema": {"type": "string"}},
                           {"name": "If-Match", "in": "header", "required": False,
                            "description": "The ticket's `version` as last read",
                            "schema": {"type": "string"}}],
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"$ref": ref.format(model="TicketPatch")},
                "example": {"category": "complaint", "add_tags": ["退款"],
                            "fields": {"order_no": "20261001-0001",
                                       "refund_amount": "1299.50"}}}}},
            "responses": {"200": ok("TicketDetail", "The ticket as it now is"),
                          "401": unauthorized,
                          "404": error("No such ticket", ["ticket_not_found"]),
                          "409": error("The table does not allow this status from the "
                                       "ticket's; `fields.status` names the allowed ones",
                                       ["invalid_transition"]),
                          "412": error("`If-Match` names another version than the ticket's",
                                       ["version_mismatch"]),
                          "422": error("A value cannot be written (one message per field), "
                                       "or resolving needs fields",
                                       ["invalid_fields", "invalid_tags", "unknown_category",
                                        "fields_required", "invalid_body"]),
                          "503": unavailable},
        },
        "fields": {"get": {
            "operationId": "listFields",
            "summary": "The custom ticket and customer fields of the config",
            "parameters": [{"name": "desk", "in": "query", "required": False,
                            "description": "Only the fields this desk's tickets have",
                            "schema": {"type": "string"}}],
            "responses": {"200": ok("FieldsView", "The field definitions"),
                          "400": bad_parameter, "401": unauthorized,
                          "503": unavailable},
        }},
    }
