"""The SDK's edges: REST (`rest.py`, `tickets.py`), identity (`identity.py`), shared HTTP
conventions (`http.py`) and the per-process runtime (`runtime.py`)."""

from __future__ import annotations

from aiohttp import web

from . import demo, files, rest, socket, uploads
from .http import api, preflight
from .runtime import runtime_context

BASE = "/sdk/v1/apps/{app}"
TICKET = BASE + "/tickets/{ticket_id}"


def routes() -> list[web.AbstractRouteDef]:
    return [
        web.get("/sdk/v1/{name:[a-z-]+\\.js}", rest.static_file),
        web.get("/sdk/v1/openapi.json", rest.openapi),
        web.get("/sdk/v1/asyncapi.json", rest.asyncapi),
        web.get("/sdk/demo", demo.page),
        web.get("/sdk/demo/demo.js", demo.script),
        web.post("/sdk/demo/sign", demo.sign),
        web.options(BASE + "/{tail:.*}", preflight),
        web.get(BASE + "/ws", socket.handle),
        web.post(BASE + "/sessions", api(rest.create_session, rate_limited=True)),
        web.delete(BASE + "/sessions/current", api(rest.delete_session)),
        web.get(BASE + "/config", api(rest.config)),
        web.get(BASE + "/faq/search", api(rest.faq_search)),
        web.get(BASE + "/faq/articles/{article_id}", api(rest.faq_article)),
        web.post(BASE + "/uploads", api(uploads.upload)),
        web.get(BASE + "/files/{sha256}", files.download),
        web.post(BASE + "/tickets", api(rest.submit_ticket)),
        web.get(BASE + "/tickets", api(rest.list_tickets)),
        web.get(TICKET, api(rest.ticket)),
        web.post(BASE + "/messages", api(rest.post_message)),  # a new chat ticket
        web.post(TICKET + "/messages", api(rest.post_message)),
        web.post(TICKET + "/read", api(rest.mark_read)),
        web.post(TICKET + "/satisfaction", api(rest.rate)),
    ]


close_sockets = socket.close_all

__all__ = ["close_sockets", "routes", "runtime_context"]
