"""schemathesis against the agent API and the web form, each on a real local port.

Every operation of each OpenAPI document gets generated requests, valid and invalid (and the
document's own examples); every answer must pass `not_a_server_error`,
`status_code_conformance`, `content_type_conformance`, `response_headers_conformance` and
`response_schema_conformance`. `make test` sends a few dozen requests per operation;
`make fuzz` sends `FUZZ_N` / 20 each (5,000 at the default 100,000).

The servers run in a thread of their own with their own event loop: schemathesis calls them
synchronously (requests), as any outside client would.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from connectors.webform import CHANNEL
from connectors.webform.openapi import build_openapi as webform_openapi
from connectors.webform.settings import WebformAccounts, WebformSettings
from intake.config import load_document
from intake.message import Attachment, Identity, Thread, utcnow
from intake.service import ACCOUNTS, BLOBS, PUBLISHER, SERVICE_SETTINGS, Service
from intake.settings import REPO_ROOT, IntakeSettings
from intake.testing import MemoryBlobStore, RecordingPublisher, RefusingPublisher
from ticket_core.agent_schemas import AgentCreate
from ticket_core.agents_api import insert_agent
from ticket_core.api import api_routes, auth_middleware
from ticket_core.clock import TestClock
from ticket_core.db import make_engine, migrate
from ticket_core.openapi import build_openapi as agent_openapi
from ticket_core.store import TicketStore
from ticket_core.tests.builders import message, route
from ticket_core.tickets_config import load_tickets

from .harness import DEFAULT_N, RESULTS, STATUSES, fuzz_n

TOKEN = "schemathesis-" + uuid.uuid4().hex
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]
EXAMPLE = REPO_ROOT / "deploy" / "intake.example.yaml"
MAX_LINE = 8190  # aiohttp's max_line_size and max_field_size


def nothing_received_while_down(ctx: Any, response: Any, case: Any) -> bool | None:
    """With neither broker nor outbox, a submission is never acknowledged; 503 says retry."""
    status = response.status_code
    assert status not in (201, 303), f"{status}: acknowledged though nothing is durable"
    assert status < 500 or status == 503, f"{status}: a server error other than 503"
    if status == 503:
        assert response.headers.get("retry-after"), "503 without Retry-After"
    return None


def refused_by_http_parser(response: Any) -> bool:
    """aiohttp's plain-text 400 for a request line or header over its 8,190 bytes.

    The HTTP server answers it before any handler runs (both documents say so); only a
    request that really came near the limit may get it.
    """
    request = response.request
    lines = [f"{request.method} {request.path_url} HTTP/1.1",
             *(f"{name}: {value}" for name, value in request.headers.items())]
    near = max(len(line.encode("utf-8", "surrogateescape")) for line in lines) > MAX_LINE - 200
    return (near and response.status_code == 400
            and response.headers.get("Content-Type", "").startswith("text/plain"))


def examples_per_operation(scale: float = 1.0) -> int:
    """40 per operation in `make test`; FUZZ_N / 20 in `make fuzz`."""
    n = fuzz_n()
    return max(1, int((40 if n <= DEFAULT_N else n // 20) * scale))


class ServerThread:
    """An aiohttp app on 127.0.0.1:<free port>, served by an event loop in its own thread."""

    def __init__(self, build: Callable[[], Awaitable[web.Application]]) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                       name="schemathesis-server")
        self.thread.start()
        self.runner: web.AppRunner | None = None
        self.port = self.call(self._start(build))

    def call(self, coro: Awaitable[Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)  # type: ignore[arg-type]

    async def _start(self, build: Callable[[], Awaitable[web.Application]]) -> int:
        self.runner = web.AppRunner(await build(), access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        return int(self.runner.addresses[0][1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        if self.runner is not None:
            self.call(self.runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


# -- the agent API on a migrated SQLite database with a few tickets --------------------------


def seed_messages() -> list[Any]:
    """Tickets on several channels and desks: one with attachments and a thread, an event."""
    now = utcnow()
    blob = "sha256:" + "0" * 64
    return [
        message("first", routed=route("aftersales", priority="high", category="complaint",
                                      tags=["vip"]),
                attachments=[Attachment(filename="invoice.pdf", original_filename="发票.pdf",
                                        content_type="application/pdf", size=10,
                                        sha256="0" * 64, blob=blob)],
                thread=Thread(message_id="<m1@example.cn>"), raw=blob),
        message("second", email="zhang.san@example.cn", name=None, subject=None,
                routed=route("sales", skill_group=None), received_at=now - timedelta(days=1)),
        message("third", channel="email", account="support@example.cn",
                kind="message", routed=route("general", priority="low"),
                identities=[Identity(kind="email", value="wang@example.cn", verified=True),
                            Identity(kind="phone", value="+8613800138000")]),
        message("tl", kind="event", routed=route(), event={"type": "subscribe", "key": None,
                                                         "data": {}}),
    ]


async def agent_api_app(folder: Path) -> web.Application:
    url = f"sqlite+aiosqlite:///{folder}/intake.sqlite3"
    await migrate(url)
    # The test clock on (INTAKE_TEST_CLOCK=1), so its endpoints are called for real.
    store = TicketStore(make_engine(url), clock=TestClock())
    store.tickets = load_tickets(load_document(EXAMPLE))  # custom fields to check
    await store.persist_many(seed_messages())
    await store.write(lambda c: insert_agent(c, AgentCreate(
        name="李娜", email="li@shop.example", desks=["aftersales"]), utcnow()))
    return Service(name="ticket_core", port=0, settings=IntakeSettings(),
                   routes=list(api_routes(store)),
                   middlewares=[auth_middleware(TOKEN)]).build_app()


# -- the web form with a recording publisher -------------------------------------------------


def webform_accounts() -> WebformAccounts:
    accounts = CHANNEL.load_accounts(load_document(EXAMPLE))
    assert isinstance(accounts, WebformAccounts)
    return accounts


def webform_app(publisher: Any, **overrides: Any) -> Callable[[], Awaitable[web.Application]]:
    async def build() -> web.Application:
        own = WebformSettings(**{"max_body_bytes": 256 * 1024, "max_file_bytes": 64 * 1024,
                                 "rate_limit_per_minute": 1_000_000,
                                 "rate_limit_burst": 1_000_000, **overrides})
        return Service(
            name="webform", port=0, settings=IntakeSettings(), routes=list(CHANNEL.routes()),
            state={SERVICE_SETTINGS: own, ACCOUNTS: webform_accounts(), PUBLISHER: publisher,
                   BLOBS: MemoryBlobStore()},
            client_max_size=own.max_body_bytes + 64 * 1024).build_app()

    return build


# -- the SDK with a recording publisher and a signed user's session -------------------------

SDK_SESSION: dict[str, str] = {}


def sdk_app(folder: Path) -> Callable[[], Awaitable[web.Application]]:
    async def build() -> web.Application:
        from connectors.sdk import CHANNEL as SDK
        from connectors.sdk.inbound.identity import user_hash
        from connectors.sdk.settings import SdkSettings

        own = SdkSettings(rate_limit_scale=1_000_000)
        settings = IntakeSettings(data_dir=folder / "sdk")
        app = Service(
            name="sdk", port=0, settings=settings, routes=list(SDK.http_routes()),
            state={SERVICE_SETTINGS: own, ACCOUNTS: SDK.load_accounts(load_document(EXAMPLE)),
                   PUBLISHER: RecordingPublisher(), BLOBS: MemoryBlobStore()},
            client_max_size=own.max_body_bytes + 64 * 1024).build_app()
        SDK_SESSION["user_hash"] = user_hash(
            "demo-app-identity-secret-for-tests-only-7f3a9c", "u-schemathesis")
        return app

    return build


def sdk_session(server: ServerThread) -> dict[str, str]:
    """A signed user's session and one ticket of theirs, made once over the API itself."""
    if "token" not in SDK_SESSION:
        base = f"{server.url}/sdk/v1/apps/demo-app"
        answer = requests.post(f"{base}/sessions", timeout=10, json={
            "user": {"id": "u-schemathesis"}, "user_hash": SDK_SESSION["user_hash"]}).json()
        SDK_SESSION["token"] = answer["session_token"]
        ticket = requests.post(f"{base}/tickets", timeout=10, json={
            "client_msg_id": "seed", "text": "seed", "fields": {"category": "售后"}},
            headers={"Authorization": f"Bearer {answer['session_token']}"}).json()
        SDK_SESSION["ticket_id"] = ticket["id"]
    return SDK_SESSION


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ServerThread]]:
    folder = tmp_path_factory.mktemp("schemathesis")
    started = {
        "agent_api": ServerThread(lambda: agent_api_app(folder)),
        "webform": ServerThread(webform_app(RecordingPublisher())),
        # Every submission past the third is rate limited; every one is refused by the broker.
        "webform_limited": ServerThread(webform_app(RecordingPublisher(), rate_limit_burst=3,
                                                    rate_limit_per_minute=1)),
        "webform_down": ServerThread(webform_app(RefusingPublisher())),
        "sdk": ServerThread(sdk_app(folder)),
    }
    yield started
    for server in started.values():
        server.close()


def known_values(server: ServerThread, name: str, path: str) -> list[dict[str, Any]]:
    """Path and query values that exist on `server`, for the operation at `path`."""
    if name.startswith("webform"):
        return [{"path_parameters": {"form_id": "contact"}}] if "{form_id}" in path else []
    if name == "sdk":
        values: dict[str, Any] = {"app": "demo-app"}
        if "{ticket_id}" in path:
            values["ticket_id"] = sdk_session(server)["ticket_id"]
        if "{article_id}" in path:
            values["article_id"] = "returns"
        query = {"q": "退货"} if path.endswith("/faq/search") else {}
        return [{"path_parameters": values, **({"query": query} if query else {})}]
    auth = {"Authorization": f"Bearer {TOKEN}"}
    tickets = requests.get(f"{server.url}/api/v1/tickets", headers=auth, timeout=10).json()
    if "{ticket_id}" in path:
        return [{"path_parameters": {"ticket_id": value}} for t in tickets["items"]
                for value in (t["id"], str(t["number"]))]
    if "{agent_id}" in path:
        agents = requests.get(f"{server.url}/api/v1/agents", headers=auth, timeout=10).json()
        return [{"path_parameters": {"agent_id": a["id"]}} for a in agents["items"]]
    if "{customer_id}" in path:
        return [{"path_parameters": {"customer_id": t["customer_id"]}}
                for t in tickets["items"]]
    if path == "/api/v1/customers":
        return [{"query": {"identity": identity}} for identity in (
            "email:li.wei@example.cn", "phone:+8613800138000", "email:WANG@example.cn")]
    if path == "/api/v1/tickets":
        return [{"query": {"status": "open", "desk": "aftersales", "limit": "1"}},
                {"query": {"channel": "email", "priority": "low"}},
                {"query": {"tag": "VIP"}}]
    if path == "/api/v1/fields":
        return [{"query": {"desk": "aftersales"}}]
    return []


def documents() -> dict[str, dict[str, Any]]:
    webform = webform_openapi(WebformSettings(), webform_accounts())
    from connectors.sdk.openapi import build_openapi as sdk_openapi

    return {"agent_api": agent_openapi(), "webform": webform,
            "webform_limited": webform, "webform_down": webform, "sdk": sdk_openapi()}


def cases() -> list[Any]:
    """(server, method, path, share of the examples): the submission alone on the variants."""
    found = []
    for server, doc in documents().items():
        for path, item in doc["paths"].items():
            for method in item:
                if "text/event-stream" in str(item[method].get("responses", {})):
                    continue  # an endless stream: ticket_core/tests/test_sse.py reads it
                if server.startswith("webform_"):
                    if path.endswith("/submissions"):
                        found.append(pytest.param(server, method, path, 0.25,
                                                  id=f"{server}-{method}-{path}"))
                else:
                    found.append(pytest.param(server, method, path, 1.0,
                                              id=f"{server}-{method}-{path}"))
    return found


@pytest.mark.parametrize("ticket_id", ["¹", "①", "٣", "1²", "%C2%B9"])
def test_a_ticket_id_of_other_digits_is_404(servers: dict[str, ServerThread],
                                             ticket_id: str) -> None:
    """Found by schemathesis: `str.isdigit` holds for '¹', `int` refuses it (was a 500)."""
    response = requests.get(f"{servers['agent_api'].url}/api/v1/tickets/{ticket_id}",
                            headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert response.status_code == 404
    assert response.json()["error"] == "ticket_not_found"


@pytest.mark.parametrize(("server", "method", "path", "scale"), cases())
def test_answers_conform_to_the_document(servers: dict[str, ServerThread], server: str,
                                         method: str, path: str, scale: float) -> None:
    schema = schemathesis.openapi.from_dict(documents()[server])
    operation = schema[path][method.upper()]
    strategies = [operation.as_strategy(generation_mode=mode)
                  for mode in schemathesis.GenerationMode]
    strategies += schema.get_strategies_from_examples(operation)
    # Random ids mostly miss: also aim at what exists (forms, tickets, customers).
    strategies += [operation.as_strategy(generation_mode=mode, **known)
                   for known in known_values(servers[server], server, path)
                   for mode in schemathesis.GenerationMode]
    base_url = servers[server].url
    headers = {"Authorization": f"Bearer {TOKEN}"} if server == "agent_api" else {}
    if server == "sdk":
        token = sdk_session(servers[server])["token"]
        if path.endswith("/sessions/current"):  # revoking: a session of its own
            token = requests.post(f"{servers[server].url}/sdk/v1/apps/demo-app/sessions",
                                  timeout=10, json={"user": {"id": "u-schemathesis"},
                                                    "user_hash": SDK_SESSION["user_hash"]},
                                  ).json()["session_token"]
        headers = {"Authorization": f"Bearer {token}"}
    checks = CHECKS
    if server == "webform_down":  # 503 is the right answer there, and a 201 the wrong one
        checks = [nothing_received_while_down, *CHECKS[1:]]
    session = requests.Session()
    count = 0
    name = f"schemathesis {server} {method.upper()} {path}"
    seen = STATUSES.setdefault(name, {})

    @settings(max_examples=examples_per_operation(scale), deadline=None, database=None,
              derandomize=fuzz_n() <= DEFAULT_N,
              phases=[Phase.explicit, Phase.generate, Phase.shrink],
              suppress_health_check=list(HealthCheck))
    @given(case=st.one_of(strategies))
    def call(case: schemathesis.Case) -> None:
        nonlocal count
        count += 1
        response = case.call(base_url=base_url, session=session, headers=headers, timeout=30,
                             allow_redirects=False)
        if refused_by_http_parser(response):
            seen["400 (aiohttp)"] = seen.get("400 (aiohttp)", 0) + 1
            return
        case.validate_response(response, checks=checks, headers=headers, transport_kwargs={
            "base_url": base_url, "session": session, "headers": headers})
        status = str(response.status_code)
        seen[status] = seen.get(status, 0) + 1

    began = time.monotonic()
    try:
        call()
    finally:
        session.close()
        RESULTS[name] = (count, time.monotonic() - began)

