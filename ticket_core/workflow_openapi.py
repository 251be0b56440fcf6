"""The OpenAPI paths of quick replies and follow-up reminders (openapi.py passes its helpers)."""

from __future__ import annotations

from typing import Any

from .agents_openapi import _body, _path, _query


def workflow_paths(ok: Any, error: Any, ref: str, unauthorized: Any, unavailable: Any,
                   bad_parameter: Any) -> dict[str, Any]:
    ticket_id = _path("ticket_id", "The ticket's id, or its number (digits)")
    reply_id = _path("quick_reply_id", "The quick reply's id (as configured, or as created)")
    no_ticket = error("No such ticket in the caller's scope", ["ticket_not_found"])
    no_reply = error("No such quick reply in the caller's desks", ["quick_reply_not_found"])
    forbidden = error("The caller's role is below supervisor, or the reply is (also) for a "
                      "desk not theirs", ["forbidden"])
    read_only = error("The quick reply is in the config (`tickets.quick_replies`): change it "
                      "there", ["read_only"])
    invalid = error("The body is not valid: `fields` names each field (an unknown desk, a "
                    "placeholder naming no known variable or field)",
                    ["invalid_body", "invalid_placeholders"])
    page = [_query("limit", "Page size.", {"type": "integer", "minimum": 1, "maximum": 200,
                                           "default": 50}),
            _query("cursor", "The `next` value of the previous page (opaque).")]
    reply_example = {"title": "退款进度", "shortcut": "/tk", "desks": ["aftersales"],
                     "text": "{{customer.name | default: \"您\"}}好，退款将在 3 个工作日内到账。"}
    return {
        "/api/v1/quick-replies": {"get": {
            "operationId": "listQuickReplies",
            "summary": "Quick replies of the caller's desks: the config's (read-only) and the "
                       "managed ones",
            "parameters": [_query("desk", "Only replies offered on this desk (and those for "
                                          "every desk)."),
                           _query("q", "Words found in the title, shortcut or text "
                                       "(case-insensitive)."), *page],
            "responses": {"200": ok("QuickReplyPage", "A page of quick replies"),
                          "400": bad_parameter, "401": unauthorized, "503": unavailable},
        }, "post": {
            "operationId": "createQuickReply",
            "summary": "Create a quick reply (supervisors for their desks; admins any, `[]` "
                       "for every desk)",
            "requestBody": _body(ref, "QuickReplyCreate", reply_example),
            "responses": {"201": ok("QuickReplyView", "The quick reply"),
                          "401": unauthorized, "403": forbidden, "422": invalid,
                          "503": unavailable},
        }},
        "/api/v1/quick-replies/{quick_reply_id}": {"patch": {
            "operationId": "changeQuickReply",
            "summary": "Change a managed quick reply: the keys given",
            "parameters": [reply_id],
            "requestBody": _body(ref, "QuickReplyPatch", {"title": "退款进度（新）"}),
            "responses": {"200": ok("QuickReplyView", "The quick reply"),
                          "401": unauthorized, "403": forbidden, "404": no_reply,
                          "409": read_only, "422": invalid, "503": unavailable},
        }, "delete": {
            "operationId": "deleteQuickReply",
            "summary": "Delete a managed quick reply",
            "parameters": [reply_id],
            "responses": {"204": {"description": "Deleted"}, "401": unauthorized,
                          "403": forbidden, "404": no_reply, "409": read_only,
                          "503": unavailable},
        }},
        "/api/v1/tickets/{ticket_id}/quick-replies/{quick_reply_id}/render": {"post": {
            "operationId": "renderQuickReply",
            "summary": "A quick reply's text for this ticket, its placeholders filled in once",
            "description": "Values: `customer.name`, `customer.fields.<key>`, `agent.name` "
                           "(the caller's agent; the admin token has none), `ticket.number`, "
                           "`ticket.subject`, `ticket.fields.<key>`, `input.<name>` from "
                           "`inputs`. A value is never read as a placeholder again.",
            "parameters": [ticket_id, reply_id],
            "requestBody": _body(ref, "RenderRequest", {"inputs": {"tracking_no": "SF123"}}),
            "responses": {"200": ok("RenderedView", "The text"), "401": unauthorized,
                          "404": error("No such ticket, or no such quick reply for its desk",
                                       ["ticket_not_found", "quick_reply_not_found"]),
                          "422": error("Placeholders with neither a value nor a default "
                                       "(`fields` names each), or a body not valid",
                                       ["unresolved_placeholders", "invalid_body"]),
                          "503": unavailable},
        }},
        "/api/v1/tickets/{ticket_id}/reminders": {"post": {
            "operationId": "createReminder",
            "summary": "A follow-up reminder (回访) for an agent on this ticket",
            "description": "Owned by its agent, not the ticket: it fires once at `due_at` "
                           "(late after an outage, never lost) with a notification, on "
                           "resolved and closed tickets too, and stays with its agent "
                           "through a transfer. Agents set their own; supervisors and admins "
                           "name `agent_id` (the admin token must).",
            "parameters": [ticket_id],
            "requestBody": _body(ref, "ReminderCreate", {
                "due_at": "2027-01-08T10:00:00+08:00", "note": "回访：确认退款已到账"}),
            "responses": {"201": ok("ReminderView", "The reminder"), "401": unauthorized,
                          "403": error("Agents set reminders for themselves only",
                                       ["forbidden"]),
                          "404": no_ticket,
                          "422": error("Due in the past, no agent (admin token), an agent "
                                       "not in the caller's desks, or another field not "
                                       "valid", ["invalid_body"]),
                          "503": unavailable},
        }},
        "/api/v1/agents/me/reminders": {"get": {
            "operationId": "listMyReminders",
            "summary": "The caller's reminders, soonest first, of tickets they can read",
            "parameters": [_query("state", "Only reminders in this state.", {
                "type": "string", "enum": ["pending", "due", "done", "cancelled"]}), *page],
            "responses": {"200": ok("ReminderPage", "A page of reminders"),
                          "400": bad_parameter, "401": unauthorized,
                          "404": error("The admin token is no agent", ["agent_not_found"]),
                          "503": unavailable},
        }},
        "/api/v1/reminders/{reminder_id}": {"patch": {
            "operationId": "closeReminder",
            "summary": "Mark a reminder done or cancel it (its agent, or a supervisor of the "
                       "ticket's desk)",
            "parameters": [_path("reminder_id", "The reminder's id")],
            "requestBody": _body(ref, "ReminderPatch", {"state": "done"}),
            "responses": {"200": ok("ReminderView", "The reminder"), "401": unauthorized,
                          "404": error("No such reminder of the caller's",
                                       ["reminder_not_found"]),
                          "409": error("Already closed in the other state",
                                       ["invalid_transition"]),
                          "422": error("The body is not valid", ["invalid_body"]),
                          "503": unavailable},
        }},
    }
