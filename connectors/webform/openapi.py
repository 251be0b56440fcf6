"""The OpenAPI 3.1 document of the web form's HTTP edge, served at GET /forms/openapi.json.

A module name outside STYLE.md's list (section 1): the agent API keeps its document in
`ticket_core/openapi.py`, and this one has the same role for the web form's callers (apps that
post submissions, sites that embed a form). The schemas describe what `inbound.py` answers;
`tests/fuzz/test_schemathesis.py` runs schemathesis against the real handlers to keep it so.
"""

from __future__ import annotations

from typing import Any

from .normalize import REFERENCE
from .settings import FORM_ID, FormDefinition, WebformAccounts, WebformSettings

OPENAPI_PATH = "/forms/openapi.json"
REF = "#/components/schemas/{name}"
# What the handler answers with `Accept: text/html` (a browser) instead of JSON.
HTML_PAGE = {"schema": {"type": "string", "description": "an HTML page"}}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error", "message"],
        "properties": {
            "error": {"type": "string", "minLength": 1, "description": "stable snake_case code"},
            "message": {"type": "string", "description": "for people"},
            "fields": {"type": "object", "additionalProperties": {"type": "string"},
                       "description": "the field at fault and why"},
        },
        "additionalProperties": False,
    },
    "Receipt": {
        "type": "object",
        "required": ["id", "reference", "idempotency_key", "status"],
        "properties": {
            "id": {"type": "string", "format": "uuid", "description": "the message id"},
            "reference": {"type": "string", "pattern": REFERENCE.pattern,
                          "description": "what the customer can quote to an agent"},
            "idempotency_key": {"type": "string", "pattern": "^webform:",
                                "description": "`webform:<form id>:<Idempotency-Key header "
                                               "or a server id>`"},
            "status": {"const": "received"},
        },
        "additionalProperties": False,
    },
    "FieldOption": {
        "type": "object",
        "required": ["value", "label"],
        "properties": {"value": {"type": "string"}, "label": {"type": "string"}},
        "additionalProperties": False,
    },
    "FormField": {
        "type": "object",
        "required": ["name", "type", "label", "required"],
        "properties": {
            "name": {"type": "string"},
            "type": {"enum": ["text", "textarea", "email", "phone", "select", "checkbox",
                              "file"]},
            "label": {"type": "string"},
            "required": {"type": "boolean"},
            "options": {"type": "array", "items": {"$ref": REF.format(name="FieldOption")},
                        "description": "selects only"},
            "placeholder": {"type": "string"},
            "help": {"type": "string"},
            "max_length": {"type": "integer", "minimum": 1},
            "pattern": {"type": "string", "description": "a regular expression the whole "
                                                         "value must match"},
            "accept": {"type": "array", "items": {"type": "string"},
                       "description": "file fields: MIME types or extensions"},
            "multiple": {"type": "boolean", "description": "file fields only"},
        },
        "additionalProperties": False,
    },
    "FormSchema": {
        "type": "object",
        "required": ["id", "title", "description", "theme_color", "lang", "submit_url",
                     "max_file_bytes", "max_files", "fields"],
        "properties": {
            "id": {"type": "string", "pattern": FORM_ID},
            "title": {"type": "string"},
            "description": {"type": ["string", "null"]},
            "theme_color": {"type": "string", "pattern": "^#[0-9a-f]{6}$"},
            "lang": {"type": "string"},
            "submit_url": {"type": "string", "description": "where to POST a submission"},
            "max_file_bytes": {"type": "integer", "minimum": 1},
            "max_files": {"type": "integer", "minimum": 0},
            "fields": {"type": "array", "items": {"$ref": REF.format(name="FormField")}},
        },
        "additionalProperties": False,
    },
    "FieldValue": {"type": ["string", "number", "boolean", "null"],
                   "description": "checkboxes take true, or `on`, `true`, `1`, `yes`"},
}

RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before trying again",
                               "required": True,
                               "schema": {"type": "string", "pattern": "^[0-9]+$"}}}


def _json(name: str) -> dict[str, Any]:
    return {"schema": {"$ref": REF.format(name=name)}}


def _error(description: str, codes: list[str], *, html: bool = True,
           headers: dict[str, Any] | None = None) -> dict[str, Any]:
    content: dict[str, Any] = {"application/json": {
        **_json("Error"), "example": {"error": codes[0], "message": description}}}
    if html:
        content["text/html"] = HTML_PAGE
    answer: dict[str, Any] = {
        "description": f"{description} (`error`: {', '.join(f'`{c}`' for c in codes)})"
                       + ("; a browser (`Accept: text/html`) gets a page instead" if html else ""),
        "content": content}
    if headers:
        answer["headers"] = headers
    return answer


def _form_id(accounts: WebformAccounts | None) -> dict[str, Any]:
    ids = [form.id for form in accounts.forms] if accounts else []
    parameter: dict[str, Any] = {
        "name": "form_id", "in": "path", "required": True,
        "description": "the form's `id` in `channels.webform.forms`"
                       + (f" (here: {', '.join(ids)})" if ids else ""),
        "schema": {"type": "string", "pattern": FORM_ID}}
    if ids:
        parameter["examples"] = {form_id: {"value": form_id} for form_id in ids}
    return parameter


def _example_values(form: FormDefinition) -> dict[str, Any]:
    """A submission of `form` that passes validation, for the document's examples."""
    values: dict[str, Any] = {}
    for field in form.fields:
        if field.type == "file" or not field.required:
            continue
        if field.type == "email":
            values[field.name] = "li.wei@example.cn"
        elif field.type == "phone":
            values[field.name] = "+8613800138000"
        elif field.type == "checkbox":
            values[field.name] = True
        elif field.type == "select":
            values[field.name] = (field.options or [])[0].value
        else:
            values[field.name] = "我的订单还没到" if field.type == "textarea" else "李雷"
    return values


def _get(operation_id: str, summary: str, ok: dict[str, Any], form_id: dict[str, Any],
         *, html_404: bool = False, extra: dict[str, Any] | None = None,
         parameters: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"get": {
        "operationId": operation_id,
        "summary": summary,
        "parameters": [form_id, *(parameters or [])],
        "responses": {
            "200": ok,
            **(extra or {}),
            "404": _error("No such form", ["form_not_found"], html=html_404),
        },
    }}


def build_openapi(settings: WebformSettings | None = None,
                  accounts: WebformAccounts | None = None) -> dict[str, Any]:
    """The document; `settings` put the limits in the descriptions, `accounts` the form ids."""
    settings = settings or WebformSettings()
    form_id = _form_id(accounts)
    examples = ({form.id: {"summary": f"a valid submission to {form.id}",
                           "value": _example_values(form)}
                 for form in accounts.forms} if accounts else {})
    value = {"$ref": REF.format(name="FieldValue")}
    json_body: dict[str, Any] = {
        "schema": {
            "type": "object",
            "description": 'The form\'s values by field name, flat or as {"fields": {...}}; '
                           "objects and arrays as values are refused (422).",
            "additionalProperties": {"anyOf": [
                value, {"type": "object", "additionalProperties": value}]},
        }}
    if examples:
        json_body["examples"] = examples
    submit = {"post": {
        "operationId": "submitForm",
        "summary": "Submit a form",
        "description": "Answers 201 (or 303 for a browser) only once the message is durable: "
                       "confirmed by the broker or fsynced to the local outbox. The hidden "
                       "`_token` and `website` (honeypot) fields of the page are accepted "
                       f"too. Bodies over {settings.max_body_bytes} bytes, files over "
                       f"{settings.max_file_bytes} bytes and fields over "
                       f"{settings.max_field_chars} characters are refused (413); at most "
                       f"{settings.max_files} files.",
        "parameters": [form_id, {
            "name": "Idempotency-Key", "in": "header", "required": False,
            "description": "1 to 200 printable ASCII characters without spaces; a retry "
                           "with the same key is the same message",
            "schema": {"type": "string", "pattern": r"^[\x21-\x7e]{1,200}$"}}],
        "requestBody": {"required": True, "content": {
            "application/json": json_body,
            "application/x-www-form-urlencoded": {"schema": {
                "type": "object", "additionalProperties": {"type": "string"}}},
            "multipart/form-data": {"schema": {
                "type": "object",
                "description": "values as parts; a file field's parts carry a filename",
                "additionalProperties": {"anyOf": [
                    {"type": "string"},
                    {"type": "string", "contentMediaType": "application/octet-stream"}]}}},
        }},
        "responses": {
            "201": {"description": "Received and durable",
                    "content": {"application/json": _json("Receipt")}},
            "303": {"description": "A browser (`Accept: text/html`) is sent to the "
                                   "confirmation page",
                    "headers": {"Location": {"required": True, "schema": {
                        "type": "string", "pattern": r"^/forms/[^/]+/thanks\?ref=WF-"}}},
                    "content": {"text/plain": {"schema": {"type": "string"}}}},
            "400": _error("The body does not parse as its content type, or the "
                          "Idempotency-Key header is not valid",
                          ["malformed_body", "idempotency_key_invalid"]),
            "404": _error("No such form", ["form_not_found"]),
            "408": _error("The body did not arrive within INTAKE_HTTP_READ_TIMEOUT_S",
                          ["request_timeout"], html=False),
            "413": _error("The body, a file or a field is over its limit; `fields` names "
                          "the file or field when known", ["payload_too_large"]),
            "415": _error("Not JSON, urlencoded or multipart", ["unsupported_media_type"]),
            "422": _error("Some fields are missing or wrong; `fields` maps each to its "
                          "message (a browser gets the form again with the messages)",
                          ["validation_failed"]),
            "429": _error("Too many submissions from this address", ["rate_limited"],
                          headers=RETRY_AFTER),
            "503": _error("Neither the broker nor the outbox took the message: nothing was "
                          "received; retry", ["unavailable"], headers=RETRY_AFTER),
        },
    }}
    html = {"description": "An HTML page", "content": {"text/html": HTML_PAGE}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Intake gateway web form",
            "version": "1",
            "description": "Hosted and embeddable forms and their submissions. Errors are "
                           "`{error, message, fields}` with a stable `error` code, or an HTML "
                           "page for a browser (a request whose `Accept` has `text/html`). A "
                           "request line or header over 8,190 bytes is refused by the HTTP "
                           "server itself with a plain-text 400 before any handler runs.",
        },
        "servers": [{"url": settings.public_url}],
        "paths": {
            "/forms/{form_id}": _get(
                "getFormPage", "The form page (server-rendered, works without JavaScript)",
                html, form_id, html_404=True),
            "/forms/{form_id}/thanks": _get(
                "getThanksPage", "The confirmation page showing the reference",
                html, form_id, html_404=True,
                parameters=[{"name": "ref", "in": "query", "required": False,
                             "description": "the submission's reference",
                             "schema": {"type": "string", "pattern": REFERENCE.pattern}}],
                extra={"303": {"description": "Without a valid `ref`: back to the form",
                               "headers": {"Location": {"required": True,
                                                        "schema": {"type": "string"}}},
                               "content": {"text/plain": {"schema": {"type": "string"}}}}}),
            "/forms/{form_id}/schema": _get(
                "getFormSchema", "The form as JSON, for apps that draw it themselves",
                {"description": "The form's fields and limits",
                 "content": {"application/json": _json("FormSchema")}}, form_id),
            "/forms/{form_id}/qr.svg": _get(
                "getFormQrSvg", "A QR code of the form's public URL, as SVG",
                {"description": "SVG", "content": {"image/svg+xml": {
                    "schema": {"type": "string"}}}}, form_id),
            "/forms/{form_id}/qr.png": _get(
                "getFormQrPng", "A QR code of the form's public URL, as PNG",
                {"description": "PNG", "content": {"image/png": {
                    "schema": {"type": "string", "contentMediaType": "image/png"}}}},
                form_id),
            "/forms/{form_id}/embed.js": _get(
                "getFormEmbedScript", "A script that puts the form in an iframe",
                {"description": "JavaScript", "content": {"text/javascript": {
                    "schema": {"type": "string"}}}}, form_id),
            "/forms/{form_id}/embed": _get(
                "getFormEmbedSnippet", "The plain `<iframe>` snippet, as text",
                {"description": "An HTML snippet as plain text", "content": {"text/plain": {
                    "schema": {"type": "string"}}}}, form_id),
            "/forms/{form_id}/submissions": submit,
            OPENAPI_PATH: {"get": {
                "operationId": "getOpenApi",
                "summary": "This document",
                "responses": {"200": {"description": "The OpenAPI document",
                                      "content": {"application/json": {
                                          "schema": {"type": "object"}}}}},
            }},
        },
        "components": {"schemas": SCHEMAS},
    }
