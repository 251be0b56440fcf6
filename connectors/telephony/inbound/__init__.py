"""The telephony edge: one module per adapter, and the runtime they share."""

from __future__ import annotations

from aiohttp import web

from . import generic, twilio
from .runtime import lines_ready, run_pbx_clients, run_timer, telephony_context

__all__ = ["lines_ready", "routes", "run_pbx_clients", "run_timer", "telephony_context"]


def routes() -> list[web.RouteDef]:
    return [web.post("/cti/{line}/events", generic.receive), *twilio.routes()]
