"""The web form's OpenAPI document: valid 3.1, served, and true to what the handlers answer."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from connectors.webform import CHANNEL
from connectors.webform.openapi import OPENAPI_PATH, build_openapi

from .conftest import FailingPublisher, MakeClient, load_accounts, make_settings

SUBMIT = "/forms/contact/submissions"
VALID = {"name": "李雷", "email": "li.wei@example.cn", "topic": "after_sales",
         "message": "我的订单还没到", "consent": True}


def document() -> dict[str, Any]:
    return build_openapi(make_settings(), load_accounts())


def check_answer(doc: dict[str, Any], path: str, method: str, status: int,
                 content_type: str, body: Any) -> None:
    """The answer's status and content type are documented and its body fits the schema."""
    responses = doc["paths"][path][method]["responses"]
    assert str(status) in responses, (path, method, status)
    content = responses[str(status)]["content"]
    assert content_type in content, (path, status, content_type)
    schema = {**content[content_type]["schema"], "components": doc["components"]}
    Draft202012Validator(schema).validate(body)


def test_the_document_is_valid_openapi_3_1() -> None:
    doc = document()
    validate(doc)
    assert doc["openapi"] == "3.1.0"
    submit = doc["paths"]["/forms/{form_id}/submissions"]["post"]
    assert set(submit["requestBody"]["content"]) == {
        "application/json", "application/x-www-form-urlencoded", "multipart/form-data"}
    assert set(submit["responses"]) == {"201", "303", "400", "404", "408", "413", "415", "422",
                                        "429", "503"}
    for status in ("429", "503"):
        assert submit["responses"][status]["headers"]["Retry-After"]["required"] is True


def test_every_route_but_static_files_is_documented() -> None:
    doc = document()
    served = {(route.method.lower(), route.path) for route in CHANNEL.routes()  # type: ignore[attr-defined]
              if not route.path.startswith("/static/")}
    documented = {(method, path) for path, item in doc["paths"].items() for method in item}
    assert served == documented


def test_the_example_submission_of_each_form_is_accepted() -> None:
    examples = document()["paths"]["/forms/{form_id}/submissions"]["post"]["requestBody"][
        "content"]["application/json"]["examples"]
    assert set(examples) == {"contact", "tiny"}
    assert set(examples["contact"]["value"]) == {"name", "email", "topic", "message", "consent"}


async def test_served_before_the_form_route(client: TestClient) -> None:
    response = await client.get(OPENAPI_PATH)
    assert response.status == 200
    assert response.content_type == "application/json"
    served = await response.json()
    validate(served)
    assert served == document()


async def test_answers_fit_the_document(client: TestClient, make_client: MakeClient) -> None:
    doc = document()
    post = "/forms/{form_id}/submissions"
    answers = [
        ("post", post, await client.post(SUBMIT, json=VALID)),
        ("post", post, await client.post(SUBMIT, json={"fields": {"name": "x"}})),
        ("post", post, await client.post(SUBMIT, data=b"{", headers={
            "Content-Type": "application/json"})),
        ("post", post, await client.post(SUBMIT, json=VALID, headers={
            "Idempotency-Key": "has space"})),
        ("post", post, await client.post(SUBMIT, data=b"x", headers={
            "Content-Type": "text/plain"})),
        ("post", post, await client.post("/forms/nope/submissions", json=VALID)),
        ("get", "/forms/{form_id}/schema", await client.get("/forms/tiny/schema")),
        ("get", "/forms/{form_id}/schema", await client.get("/forms/contact/schema")),
        ("get", "/forms/{form_id}/qr.svg", await client.get("/forms/nope/qr.svg")),
    ]
    statuses = []
    for method, path, response in answers:
        statuses.append(response.status)
        check_answer(doc, path, method, response.status, response.content_type,
                     await response.json())
    assert statuses == [201, 422, 400, 400, 415, 404, 200, 200, 404]

    # A body announced over the limit is refused unread, and the connection closed.
    response = await (await make_client()).post(SUBMIT, data=b"{}", headers={
        "Content-Type": "application/json", "Content-Length": str(300 * 1024)})
    assert response.status == 413
    check_answer(doc, post, "post", 413, response.content_type, await response.json())

    limited = await make_client(rate_limit_burst=1, rate_limit_per_minute=1)
    await limited.post(SUBMIT, json=VALID)
    response = await limited.post(SUBMIT, json=VALID)
    assert response.status == 429 and response.headers["Retry-After"].isdigit()
    check_answer(doc, post, "post", 429, response.content_type, await response.json())

    failing = await make_client(publisher=FailingPublisher())
    response = await failing.post(SUBMIT, json=VALID)
    assert response.status == 503 and response.headers["Retry-After"].isdigit()
    check_answer(doc, post, "post", 503, response.content_type, await response.json())


@pytest.mark.parametrize("path", ["/forms/contact", "/forms/contact/thanks?ref=WF-00000000",
                                  "/forms/contact/embed", "/forms/contact/embed.js",
                                  "/forms/contact/qr.svg", "/forms/contact/qr.png"])
async def test_pages_and_images_have_their_documented_type(client: TestClient, path: str) -> None:
    doc = document()
    template = "/forms/{form_id}" + path.split("?")[0].removeprefix("/forms/contact")
    response = await client.get(path, allow_redirects=False)
    assert response.status == 200
    assert response.content_type in doc["paths"][template]["get"]["responses"]["200"]["content"]
