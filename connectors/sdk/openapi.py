"""The SDK's API documents: OpenAPI 3.1 for REST (`GET /sdk/v1/openapi.json`) and AsyncAPI 3.0
for the socket (`GET /sdk/v1/asyncapi.json`), so native SDKs (Swift, Kotlin, C#) can be
written or generated from them. The schemas describe what `inbound/` answers."""

from __future__ import annotations

from typing import Any

REF = "#/components/schemas/{name}"
TEXT = {"type": "string", "description": "as sent: no NUL, no lone surrogate"}
CLIENT_MSG_ID = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$",
                 "description": "the client's id of this request (a UUID): a repeat answers the "
                                "original result, other content with it is 409"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(name=name)}


def _obj(required: list[str], properties: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties, **extra}


SCHEMAS: dict[str, Any] = {
    "Error": _obj(["error", "message", "fields"], {
        "error": {"type": "string", "description": "stable snake_case code, e.g. "
                  "invalid_identity, token_expired, session_expired, not_found, too_long, "
                  "invalid_text, rate_limited, idempotency_conflict"},
        "message": {"type": "string"},
        "fields": {"type": "object"}}),
    "SessionRequest": {"type": "object", "description": "one proof: user + user_hash (HMAC), "
                       "jwt, device_token, or anonymous: true", "properties": {
                           "user": _obj(["id"], {"id": {"type": "string", "minLength": 1,
                                                        "maxLength": 255},
                                                 "name": {"type": "string"},
                                                 "email": {"type": "string"},
                                                 "phone": {"type": "string"}}),
                           "user_hash": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                           "jwt": {"type": "string"},
                           "device_token": {"type": "string"},
                           "anonymous": {"type": "boolean"}}},
    "Session": _obj(["session_token", "expires_at", "user"], {
        "session_token": {"type": "string"}, "expires_at": {"type": "string",
                                                           "format": "date-time"},
        "user": _obj(["id", "verified"], {"id": {"type": ["string", "null"]},
                                          "verified": {"type": "boolean"},
                                          "name": {"type": ["string", "null"]}}),
        "device_token": {"type": "string", "description": "shown once"}}),
    "Attachment": _obj(["filename", "content_type", "size", "sha256"], {
        "filename": {"type": "string"}, "content_type": {"type": "string"},
        "size": {"type": "integer"}, "sha256": {"type": "string"}}),
    "Message": _obj(["id", "direction", "text", "attachments", "created_at", "seq"], {
        "id": {"type": "string"}, "direction": {"enum": ["customer", "agent"]},
        "text": {"type": "string"}, "attachments": {"type": "array", "items": _ref("Attachment")},
        "author": {"type": "string"}, "created_at": {"type": "string"},
        "client_msg_id": {"type": ["string", "null"]}, "seq": {"type": "integer"}}),
    "Ticket": _obj(["id", "reference", "number", "kind", "subject", "status", "created_at",
                    "updated_at", "unread", "last_message"], {
        "id": {"type": "string", "format": "uuid"},
        "reference": {"type": "string", "pattern": "^SDK-[0-9A-HJKMNP-TV-Z]{8}$"},
        "number": {"type": ["integer", "null"]}, "kind": {"enum": ["form", "chat"]},
        "subject": {"type": ["string", "null"]},
        "status": {"enum": ["received", "new", "open", "pending", "on_hold", "resolved",
                            "closed", "merged"]},
        "created_at": {"type": "string"}, "updated_at": {"type": "string"},
        "unread": {"type": "integer"}, "last_message": {"type": ["object", "null"]}}),
    "TicketDetail": {"allOf": [_ref("Ticket"), _obj(["messages", "progress", "satisfaction"], {
        "messages": {"type": "array", "items": _ref("Message")},
        "progress": {"type": "array", "items": _obj(["status", "at"], {
            "status": {"type": "string"}, "at": {"type": "string"}})},
        "satisfaction": {"type": ["object", "null"]}})]},
    "TicketPage": _obj(["items", "next"], {"items": {"type": "array", "items": _ref("Ticket")},
                                           "next": {"type": ["string", "null"]}}),
    "NewTicket": _obj(["text"], {"client_msg_id": CLIENT_MSG_ID, "subject": TEXT,
                                 "text": TEXT, "fields": {"type": "object"},
                                 "attachments": {"type": "array", "items": {"type": "string"},
                                                 "description": "upload ids"}}),
    "NewMessage": _obj(["text"], {"client_msg_id": CLIENT_MSG_ID, "text": TEXT,
                                  "attachments": {"type": "array",
                                                  "items": {"type": "string"}}}),
    "Ack": _obj(["message_id", "ticket_id", "client_msg_id", "seq"], {
        "message_id": {"type": "string"}, "ticket_id": {"type": "string"},
        "client_msg_id": {"type": "string"}, "seq": {"type": "integer"}}),
    "Upload": _obj(["upload_id", "filename", "content_type", "size", "sha256"], {
        "upload_id": {"type": "string"}, "filename": {"type": "string"},
        "content_type": {"type": "string"}, "size": {"type": "integer"},
        "sha256": {"type": "string"}}),
    "Rating": _obj(["score"], {"score": {"type": "integer", "minimum": 1, "maximum": 5},
                               "comment": {"type": "string"}}),
    "Config": {"type": "object"},
    "FaqHits": _obj(["items"], {"items": {"type": "array", "items": _obj(
        ["id", "title", "snippet", "score"], {"id": {"type": "string"},
                                              "title": {"type": "string"},
                                              "snippet": {"type": "string",
                                                          "description": "escaped HTML with "
                                                                         "<mark>"},
                                              "score": {"type": "number"}})}}),
    "FaqArticle": _obj(["id", "title", "html", "text", "tags", "locale", "updated_at"], {
        "id": {"type": "string"}, "title": {"type": "string"},
        "html": {"type": "string", "description": "cleaned HTML"}, "text": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "locale": {"type": ["string", "null"]}, "updated_at": {"type": "string"}}),
}


def _answer(name: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(name)}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {400: "malformed JSON", 401: "no valid session (error tells why)",
            403: "origin not allowed", 404: "unknown app, or not yours", 409: "conflict",
            413: "too large", 415: "wrong content type", 422: "invalid (fields tell which)",
            429: "rate limited (Retry-After)", 503: "not durable now: retry (Retry-After)"}
    return {str(code): _answer("Error", text[code]) for code in codes}


def _json_body(name: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _ref(name)}}}


BEARER = [{"session": []}]
WRITE = (400, 401, 403, 404, 409, 413, 415, 422, 429, 503)


def build_openapi() -> dict[str, Any]:
    app = {"name": "app", "in": "path", "required": True, "schema": {"type": "string"},
           "description": "the app key"}
    ticket = {"name": "ticket_id", "in": "path", "required": True, "schema": {"type": "string"}}
    base = "/sdk/v1/apps/{app}"
    paths: dict[str, Any] = {
        f"{base}/sessions": {"post": {
            "operationId": "openSession", "security": [], "parameters": [app],
            "requestBody": _json_body("SessionRequest"),
            "responses": {"201": _answer("Session", "the session"),
                          **_errors(400, 401, 403, 404, 415, 422, 429)}}},
        f"{base}/sessions/current": {"delete": {
            "operationId": "closeSession", "security": BEARER, "parameters": [app],
            "responses": {"204": {"description": "revoked"}, **_errors(401, 403, 404)}}},
        f"{base}/config": {"get": {
            "operationId": "getConfig", "security": [], "parameters": [app],
            "responses": {"200": _answer("Config", "the widget's configuration"),
                          **_errors(403, 404)}}},
        f"{base}/uploads": {"post": {
            "operationId": "upload", "security": BEARER, "parameters": [app],
            "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                "type": "object", "properties": {"file": {"type": "string",
                                                          "format": "binary"}}}}}},
            "responses": {"201": _answer("Upload", "stored"), **_errors(*WRITE)}}},
        f"{base}/files/{{sha256}}": {"get": {
            "operationId": "downloadFile", "security": [],
            "description": "The signed `url` of an attachment in GET …/tickets/{id}: valid "
                           "for 10 minutes; raster images inline, anything else a download.",
            "parameters": [app, {"name": "sha256", "in": "path", "required": True,
                                 "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"}},
                           *({"name": name, "in": "query", "required": True,
                              "schema": {"type": "string"}}
                             for name in ("name", "type", "exp", "sig"))],
            "responses": {"200": {"description": "the file", "content": {"*/*": {"schema": {
                "type": "string", "format": "binary"}}}},
                **_errors(404)}}},
        f"{base}/tickets": {
            "post": {"operationId": "submitTicket", "security": BEARER, "parameters": [app],
                     "requestBody": _json_body("NewTicket"),
                     "responses": {"201": _answer("Ticket", "durable"),
                                   "200": _answer("Ticket", "a repeat: the original"),
                                   **_errors(*WRITE)}},
            "get": {"operationId": "listTickets", "security": BEARER,
                    "parameters": [app, {"name": "cursor", "in": "query",
                                         "schema": {"type": "string"}}],
                    "responses": {"200": _answer("TicketPage", "mine, latest first"),
                                  **_errors(401, 403, 404, 422)}}},
        f"{base}/tickets/{{ticket_id}}": {"get": {
            "operationId": "getTicket", "security": BEARER, "parameters": [app, ticket],
            "responses": {"200": _answer("TicketDetail", "the ticket"),
                          **_errors(401, 403, 404)}}},
        f"{base}/messages": {"post": {
            "operationId": "startChat", "security": BEARER, "parameters": [app],
            "requestBody": _json_body("NewMessage"),
            "responses": {"201": _answer("Ack", "durable"), "200": _answer("Ack", "a repeat"),
                          **_errors(*WRITE)}}},
        f"{base}/tickets/{{ticket_id}}/messages": {"post": {
            "operationId": "postMessage", "security": BEARER, "parameters": [app, ticket],
            "requestBody": _json_body("NewMessage"),
            "responses": {"201": _answer("Ack", "durable"), "200": _answer("Ack", "a repeat"),
                          **_errors(*WRITE)}}},
        f"{base}/tickets/{{ticket_id}}/read": {"post": {
            "operationId": "markRead", "security": BEARER, "parameters": [app, ticket],
            "requestBody": {"required": True, "content": {"application/json": {"schema": _obj(
                ["seq"], {"seq": {"type": "integer", "minimum": 0}})}}},
            "responses": {"200": _answer("Ticket", "the ticket"), **_errors(400, 401, 403,
                                                                            404, 415, 422)}}},
        f"{base}/tickets/{{ticket_id}}/satisfaction": {"post": {
            "operationId": "rate", "security": BEARER, "parameters": [app, ticket],
            "requestBody": _json_body("Rating"),
            "responses": {"201": {"description": "rated"}, "200": {"description": "unchanged"},
                          **_errors(*WRITE)}}},
        f"{base}/faq/search": {"get": {
            "operationId": "searchFaq", "security": [],
            "parameters": [app, {"name": "q", "in": "query", "required": True,
                                 "schema": {"type": "string"}},
                           {"name": "limit", "in": "query", "schema": {"type": "integer"}}],
            "responses": {"200": _answer("FaqHits", "hits, best first"),
                          **_errors(403, 404, 422)}}},
        f"{base}/faq/articles/{{article_id}}": {"get": {
            "operationId": "getArticle", "security": [],
            "parameters": [app, {"name": "article_id", "in": "path", "required": True,
                                 "schema": {"type": "string"}}],
            "responses": {"200": _answer("FaqArticle", "the article"), **_errors(403, 404)}}},
    }
    return {"openapi": "3.1.0",
            "info": {"title": "intake SDK API", "version": "1",
                     "description": "What apps, the widget and native SDKs call. Sessions "
                                    "come from POST …/sessions; the socket is described by "
                                    "/sdk/v1/asyncapi.json."},
            "servers": [{"url": "/"}], "paths": paths,
            "components": {"schemas": SCHEMAS, "securitySchemes": {
                "session": {"type": "http", "scheme": "bearer",
                            "description": "the session_token of POST …/sessions"}}}}


def _frame(kind: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"payload": _obj(["type", *required], {"type": {"const": kind}, **properties})}


def build_asyncapi() -> dict[str, Any]:
    seq = {"type": "integer", "description": "the user's event sequence"}
    client = {
        "hello": _frame("hello", {"session_token": {"type": "string"},
                                  "after": {"type": "integer", "minimum": 0}},
                        ["session_token"]),
        "message": _frame("message", {"client_msg_id": CLIENT_MSG_ID, "ticket_id":
                                      {"type": "string"}, "text": TEXT,
                                      "attachments": {"type": "array",
                                                      "items": {"type": "string"}}},
                          ["client_msg_id", "text"]),
        "typing": _frame("typing", {"ticket_id": {"type": "string"},
                                    "state": {"enum": ["start", "stop"]}},
                         ["ticket_id", "state"]),
        "read": _frame("read", {"ticket_id": {"type": "string"}, "seq": seq},
                       ["ticket_id", "seq"]),
        "ping": _frame("ping", {}, []),
    }
    server = {
        "welcome": _frame("welcome", {"user": {"type": "object"}, "seq": seq}, ["user", "seq"]),
        "synced": _frame("synced", {"seq": seq}, ["seq"]),
        "reset": _frame("reset", {}, []),
        "ack": _frame("ack", {"client_msg_id": CLIENT_MSG_ID, "message_id": {"type": "string"},
                              "ticket_id": {"type": "string"}, "seq": seq},
                      ["client_msg_id", "message_id", "ticket_id", "seq"]),
        "messageCreated": _frame("message.created", {"seq": seq, "ticket_id":
                                                     {"type": "string"},
                                                     "message": _ref("Message")},
                                 ["seq", "ticket_id", "message"]),
        "ticketUpdated": _frame("ticket.updated", {"seq": seq, "ticket_id": {"type": "string"},
                                                   "ticket": _ref("Ticket")},
                                ["seq", "ticket_id", "ticket"]),
        "pong": _frame("pong", {}, []),
        "error": _frame("error", {"code": {"enum": ["not_found", "too_long", "invalid_text",
                                                    "rate_limited", "idempotency_conflict",
                                                    "invalid_attachment", "unavailable",
                                                    "invalid", "missing"]},
                                  "message": {"type": "string"},
                                  "client_msg_id": {"type": "string"},
                                  "retry_after_ms": {"type": "integer"}}, ["code", "message"]),
    }
    messages = {**{f"client_{k}": v for k, v in client.items()},
                **{f"server_{k}": v for k, v in server.items()}}
    return {
        "asyncapi": "3.0.0",
        "info": {"title": "intake SDK live chat", "version": "1", "description":
                 "JSON text frames. Send hello first (within 10 s), with `after` = the last "
                 "seq seen to replay what was missed. Close codes: 4400 bad frame, 4401 no "
                 "or bad hello / session, 1003 binary, 1007 invalid UTF-8, 1009 over 64 KiB, "
                 "4429 too many sockets, 1001 shutdown (resume)."},
        "servers": {"sdk": {"host": "127.0.0.1:8002", "protocol": "ws"}},
        "channels": {"chat": {
            "address": "/sdk/v1/apps/{app}/ws",
            "parameters": {"app": {"description": "the app key"}},
            "messages": {name: {"$ref": f"#/components/messages/{name}"} for name in messages}}},
        "operations": {
            "send": {"action": "receive", "channel": {"$ref": "#/channels/chat"},
                     "messages": [{"$ref": f"#/channels/chat/messages/client_{k}"}
                                  for k in client]},
            "receive": {"action": "send", "channel": {"$ref": "#/channels/chat"},
                        "messages": [{"$ref": f"#/channels/chat/messages/server_{k}"}
                                     for k in server]}},
        "components": {"messages": messages, "schemas": {
            "Message": SCHEMAS["Message"], "Attachment": SCHEMAS["Attachment"],
            "Ticket": SCHEMAS["Ticket"]}},
    }
