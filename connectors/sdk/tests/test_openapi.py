"""The SDK's API documents: a valid OpenAPI 3.1 covering every route, and the AsyncAPI."""

from __future__ import annotations

import re

from openapi_spec_validator import validate

from connectors.sdk import CHANNEL
from connectors.sdk.openapi import build_asyncapi, build_openapi
from intake.testing import ContractEdge


def test_the_openapi_document_is_valid_and_covers_every_api_route() -> None:
    document = build_openapi()
    validate(document)
    routes = {(route.method.lower(), re.sub(r"\{(\w+):.*\}$", r"{\1}", route.path))
              for route in CHANNEL.http_routes()
              if route.path.startswith("/sdk/v1/apps/") and route.method != "OPTIONS"
              and not route.path.endswith("/ws")}
    documented = {(method, path) for path, item in document["paths"].items()
                  for method in item}
    assert routes == documented


def test_the_asyncapi_document_names_every_frame() -> None:
    document = build_asyncapi()
    assert document["asyncapi"] == "3.0.0"
    messages = document["components"]["messages"]
    kinds = {m["payload"]["properties"]["type"]["const"] for m in messages.values()}
    assert kinds == {"hello", "message", "typing", "read", "ping", "welcome", "synced",
                     "reset", "ack", "message.created", "ticket.updated", "pong", "error"}


async def test_both_are_served(edge: ContractEdge) -> None:
    for path, key in (("/sdk/v1/openapi.json", "openapi"), ("/sdk/v1/asyncapi.json",
                                                            "asyncapi")):
        response = await edge.client.get(path)
        assert response.status == 200 and key in await response.json()
