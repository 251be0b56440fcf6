"""The router service: consume `intake.router`, decide, publish to `intake.routed`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from aiohttp import web
from pydantic import ValidationError

from intake import BUS, ConfigDocument, Consumer, IntakeSettings, Message, Service, Task
from intake.http import error_response
from intake.service import bus_context

from .consume import decide_in_full, route_batch_handler
from .lookup import CustomerDirectory
from .reload import RulesHolder
from .settings import RouterSettings

RULES = web.AppKey("rules", RulesHolder)
DIRECTORY = web.AppKey("directory", CustomerDirectory)


async def get_rules(request: web.Request) -> web.Response:
    holder = request.app[RULES]
    body = holder.current.summary()
    body["refused"] = holder.last_error  # the problems of a newer file that was refused
    return web.json_response(body, dumps=lambda o: orjson.dumps(o).decode())


async def post_explain(request: web.Request) -> web.Response:
    """The decision the rules in force would make for this message (or `{message, customer}`:
    the snapshot instead of the lookup); nothing is published."""
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        # aiohttp's own answer is plain text; every refusal here is JSON.
        return error_response(413, "payload_too_large",
                              f"the body is over {request.client_max_size} bytes")
    customer: dict[str, Any] | None = None
    try:
        parsed = orjson.loads(body)
        if isinstance(parsed, dict) and "message" in parsed and "channel" not in parsed:
            # `{message, customer}`: the customer snapshot the rules' customer.* keys read.
            customer = parsed.get("customer")
            if customer is not None and not isinstance(customer, dict):
                return error_response(422, "invalid_customer", "customer is an object")
            parsed = parsed["message"]
        message = Message.model_validate(parsed)
    except orjson.JSONDecodeError:
        return error_response(422, "invalid_message", "the body is not JSON")
    except ValidationError as exc:
        return error_response(
            422, "invalid_message", "the body is not a valid common message",
            {".".join(map(str, e["loc"])): e["msg"] for e in exc.errors()})
    rules = request.app[RULES].current
    if customer is not None:
        decision = rules.decide(message, customer, max_tried=None)
    else:  # as the router would: the sender looked up when the decision reads customer.*
        decision = await decide_in_full(message, rules, request.app.get(DIRECTORY))
    return web.Response(body=decision.model_dump_json(), content_type="application/json")


def agent_token(settings: IntakeSettings) -> str | None:
    """The agent API's token: `INTAKE_API_TOKEN`, else the one the ticket core generated into
    the data dir (None until it has)."""
    if settings.api_token is not None:
        return settings.api_token.get_secret_value()
    try:
        return (settings.data_dir / "api-token").read_text().strip() or None
    except OSError:
        return None


def build_service(settings: IntakeSettings, doc: ConfigDocument) -> Service:
    own = RouterSettings()
    holder = RulesHolder.from_settings(settings)
    holder.load()  # a wrong config stops the start with its problems

    directory = CustomerDirectory(settings.effective_ticket_core_url, lambda: agent_token(settings))

    async def watch_rules(app: web.Application) -> None:
        await holder.watch(own.reload_interval_s)

    async def lookups(app: web.Application) -> AsyncIterator[None]:
        yield
        await directory.close()

    return Service(
        name="router",
        port=own.port,
        settings=settings,
        routes=[web.get("/rules", get_rules), web.post("/explain", post_explain)],
        # Batches form only under load (no waiting for company): each is decided, published
        # with its confirms awaited together, and acked with one frame. While one batch waits
        # for its confirms the next ones are decided and published (`pipeline`).
        consumers=[Consumer("router", Message,
                            lambda app: route_batch_handler(holder, app[BUS], directory),
                            batch=True,
                            max_batch=own.max_batch, max_wait_s=own.max_batch_wait_s,
                            prefetch=own.prefetch, pipeline=own.pipeline)],
        # Not critical: without it the rules in force stay in force; the router still routes.
        tasks=[Task("rules-watch", watch_rules, critical=False)],
        contexts=[bus_context, lookups],
        state={RULES: holder, DIRECTORY: directory},
    )
