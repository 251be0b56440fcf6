"""The OpenAPI paths of agents, tokens and notifications, and the scope answers (403) that the
auth middleware adds to every other operation (openapi.py passes its helpers in)."""

from __future__ import annotations

from typing import Any

from .scope import ROUTE_ROLES

AGENT_MODELS = ("AgentView", "AgentPage", "IssuedTokenView", "TokenPage", "NotificationView",
                "NotificationPage")
BODY_MODELS = ("AgentCreate", "AgentPatch", "PresenceChange", "TokenCreate")


def _path(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": {"type": "string"}}


def _query(name: str, description: str, schema: dict[str, Any] | None = None,
           ) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema or {"type": "string"}}


def _body(ref: str, model: str, example: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {
        "schema": {"$ref": ref.format(model=model)}, "example": example}}}


def agent_paths(ok: Any, error: Any, ref: str, unauthorized: Any, unavailable: Any,
                bad_parameter: Any) -> dict[str, Any]:
    agent_id = _path("agent_id", "The agent's id, or `me` for the caller")
    forbidden = error("The caller's role is below the one this needs (`fields.role`: "
                      "`requires <role>`), or a desk named is not theirs",
                      ["forbidden", "desk_not_in_scope"])
    no_agent = error("No such agent in the caller's desks (the admin token is no agent: "
                     "`me` is 404 with it)", ["agent_not_found"])
    invalid = error("The body is not valid: `fields` names each field (a desk or skill group "
                    "not in the rules in force, a skill group on none of the agent's desks, "
                    "an unknown channel in `capacity`)", ["invalid_body"])
    taken = error("Another agent has this email address", ["email_taken"])
    page = [_query("limit", "Page size.", {"type": "integer", "minimum": 1, "maximum": 200,
                                           "default": 50}),
            _query("cursor", "The `next` value of the previous page (opaque).")]
    return {
        "/api/v1/agents": {"post": {
            "operationId": "createAgent",
            "summary": "Create an agent (admin; a supervisor: role `agent` on their desks)",
            "description": "New agents start `offline`. Each desk and skill group must exist "
                           "in the rules in force, each skill group on one of the agent's "
                           "desks. A `capacity` channel left out takes the skill group's.",
            "requestBody": _body(ref, "AgentCreate", {
                "name": "李娜", "email": "li@shop.example", "role": "agent",
                "desks": ["aftersales"], "skill_groups": ["sg_aftersales_l1"],
                "capacity": {"wechat": 5, "email": 10}}),
            "responses": {"201": ok("AgentView", "The agent"), "401": unauthorized,
                          "403": forbidden, "409": taken, "422": invalid,
                          "503": unavailable},
        }, "get": {
            "operationId": "listAgents",
            "summary": "Agents sharing one of the caller's desks (all for admins), oldest first",
            "parameters": [_query("desk", "Only agents of this desk."),
                           _query("skill_group", "Only members of this skill group."),
                           _query("role", "Only this role.",
                                  {"type": "string", "enum": ["agent", "supervisor", "admin"]}),
                           _query("presence", "Only agents with this presence.",
                                  {"type": "string", "enum": ["online", "away", "offline"]}),
                           *page],
            "responses": {"200": ok("AgentPage", "A page of agents"), "400": bad_parameter,
                          "401": unauthorized,
                          "403": error("The desk is not among the caller's",
                                       ["desk_not_in_scope"]),
                          "503": unavailable},
        }},
        "/api/v1/agents/{agent_id}": {"get": {
            "operationId": "getAgent",
            "summary": "An agent (`me`: the caller)",
            "parameters": [agent_id],
            "responses": {"200": ok("AgentView", "The agent"), "401": unauthorized,
                          "404": no_agent, "503": unavailable},
        }, "patch": {
            "operationId": "changeAgent",
            "summary": "Change an agent (admin; a supervisor: agents of their desks, never a "
                       "role); only the keys given change",
            "parameters": [agent_id],
            "requestBody": _body(ref, "AgentPatch", {"capacity": {"wechat": 3}}),
            "responses": {"200": ok("AgentView", "The agent as it now is"),
                          "401": unauthorized, "403": forbidden, "404": no_agent,
                          "409": taken, "422": invalid, "503": unavailable},
        }},
        "/api/v1/agents/{agent_id}/presence": {"put": {
            "operationId": "setPresence",
            "summary": "Set an agent's presence (the agent, or a supervisor of their desks)",
            "description": "`away` takes no new work; the time it changed is kept.",
            "parameters": [agent_id],
            "requestBody": _body(ref, "PresenceChange", {"status": "online"}),
            "responses": {"200": ok("AgentView", "The agent as it now is"),
                          "401": unauthorized, "403": forbidden, "404": no_agent,
                          "422": error("Not a presence", ["invalid_body"]),
                          "503": unavailable},
        }},
        "/api/v1/agents/me/notifications": {"get": {
            "operationId": "myNotifications",
            "summary": "The caller's notifications, newest first (tickets in their scope)",
            "parameters": [_query("unread", "Only those not read yet.",
                                  {"type": "string", "enum": ["true", "false", "1", "0"]}),
                           *page],
            "responses": {"200": ok("NotificationPage", "A page of notifications"),
                          "400": bad_parameter, "401": unauthorized, "404": no_agent,
                          "503": unavailable},
        }},
        "/api/v1/notifications/{notification_id}/read": {"post": {
            "operationId": "readNotification",
            "summary": "Mark one of the caller's notifications read (again: no change)",
            "parameters": [_path("notification_id", "The notification's id")],
            "responses": {"200": ok("NotificationView", "The notification"),
                          "401": unauthorized,
                          "404": error("No such notification of the caller's",
                                       ["notification_not_found"]),
                          "503": unavailable},
        }},
        "/api/v1/tokens": {"post": {
            "operationId": "createToken",
            "summary": "Issue an agent's API token (admin): shown once, stored as SHA-256",
            "description": "`desks` may only narrow the agent's; without it the token works "
                           "all of the agent's desks as they are at each request. An expired "
                           "or revoked token is 401.",
            "requestBody": _body(ref, "TokenCreate", {
                "agent_id": "5b0d8a9e-2a43-4d3c-9a3b-6f1d2c3e4f50", "desks": ["aftersales"],
                "name": "li laptop", "expires_at": "2027-12-31T00:00:00Z"}),
            "responses": {"201": ok("IssuedTokenView", "The token, with `token` shown once"),
                          "401": unauthorized, "403": forbidden,
                          "422": error("Unknown agent, desks beyond the agent's, an expiry in "
                                       "the past, or another field not valid",
                                       ["invalid_body"]),
                          "503": unavailable},
        }, "get": {
            "operationId": "listTokens",
            "summary": "Tokens (admin), newest first: ids, names, desks, expiry, revocation; "
                       "never the token itself",
            "parameters": [_query("agent_id", "Only this agent's tokens."), *page],
            "responses": {"200": ok("TokenPage", "A page of tokens"), "400": bad_parameter,
                          "401": unauthorized, "403": forbidden, "503": unavailable},
        }},
        "/api/v1/tokens/{token_id}": {"delete": {
            "operationId": "revokeToken",
            "summary": "Revoke a token (admin): refused (401) from the next request",
            "parameters": [_path("token_id", "The token's id")],
            "responses": {"204": {"description": "Revoked"}, "401": unauthorized,
                          "403": forbidden,
                          "404": error("No such token", ["token_not_found"]),
                          "503": unavailable},
        }},
    }


def add_scope_answers(paths: dict[str, Any], error: Any) -> None:
    """The 403s the auth middleware gives any operation: `desk_not_in_scope` where a `desk`
    parameter is taken, `read_only_access` on a ticket's writes (its first-contact agent),
    `forbidden` on routes of a role (scope.ROUTE_ROLES)."""
    for path, item in paths.items():
        for method, operation in item.items():
            responses = operation.setdefault("responses", {})
            codes: list[str] = []
            names = {p.get("name") for p in operation.get("parameters", [])}
            if "desk" in names:
                codes.append("desk_not_in_scope")
            if "{ticket_id}" in path and method != "get" and not path.endswith("/notes"):
                codes.append("read_only_access")
            if (method.upper(), path) in ROUTE_ROLES:
                codes.append("forbidden")
            if codes and "403" not in responses:
                responses["403"] = error("Out of the caller's scope: a desk not theirs, a "
                                         "ticket they may only read, or a role they lack",
                                         codes)
