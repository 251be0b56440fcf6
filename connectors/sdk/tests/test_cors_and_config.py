"""CORS per app, and what `intake config check` refuses in `channels.sdk`."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from connectors.sdk.settings import SdkAccounts

from .conftest import Sdk

PREFLIGHT = {"Access-Control-Request-Method": "POST",
             "Access-Control-Request-Headers": "authorization, content-type"}


async def test_a_preflight_echoes_an_allowed_origin_never_a_wildcard(app_client: Sdk) -> None:
    response = await app_client.client.options(
        f"{app_client.base}/tickets", headers={**PREFLIGHT, "Origin": "https://shop.example"})
    assert response.status == 204
    assert response.headers["Access-Control-Allow-Origin"] == "https://shop.example"
    assert response.headers["Vary"] == "Origin"
    assert "authorization" in response.headers["Access-Control-Allow-Headers"]
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    assert int(response.headers["Access-Control-Max-Age"]) > 0


async def test_another_origin_gets_no_cors_headers_and_403(app_client: Sdk) -> None:
    evil = {"Origin": "https://evil.example"}
    response = await app_client.client.options(f"{app_client.base}/tickets",
                                               headers={**PREFLIGHT, **evil})
    assert response.status == 403 and "Access-Control-Allow-Origin" not in response.headers
    for path in ("/config", "/faq/search?q=x"):
        response = await app_client.client.get(app_client.base + path, headers=evil)
        assert response.status == 403, path
        assert "Access-Control-Allow-Origin" not in response.headers
    response = await app_client.client.post(f"{app_client.base}/sessions", json={},
                                            headers=evil)
    assert response.status == 403


async def test_an_allowed_origin_and_a_native_client_are_answered(app_client: Sdk) -> None:
    response = await app_client.client.get(f"{app_client.base}/config",
                                           headers={"Origin": "http://localhost:8002"})
    assert response.status == 200
    assert response.headers["Access-Control-Allow-Origin"] == "http://localhost:8002"
    native = await app_client.client.get(f"{app_client.base}/config")
    assert native.status == 200 and "Access-Control-Allow-Origin" not in native.headers
    config = await native.json()
    assert config["anonymous_allowed"] is False
    assert [f["name"] for f in config["ticket_fields"]] == ["category", "order_no",
                                                            "contact_phone"]
    assert config["uploads"]["max_bytes"] == 10_485_760


@pytest.mark.parametrize(("app", "problem"), [
    ({"id": "a", "hmac_mandatory": True}, "hmac_mandatory needs an identity_secret"),
    ({"id": "a", "allowed_origins": ["*"]}, "no wildcard"),
    ({"id": "a", "allowed_origins": ["https://*.shop.example"]}, "no wildcard"),
    ({"id": "a", "allowed_origins": ["https://shop.example/"]}, "no wildcard"),
    ({"id": "a", "jwt": {"algorithms": ["none"]}}, "algorithms"),
    ({"id": "a", "ticket_fields": [{"name": "n", "type": "text", "min": 1}]}, "min and max"),
])
def test_the_config_refuses(app: dict, problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        SdkAccounts.model_validate({"apps": [app]})
