"""`intake new-connector NAME`: writes a connector folder that passes the contract on day one.

The folder is the shape of STYLE.md section 1 with the smallest working edge (a signed-off JSON
webhook: `POST /<name>/{account}/events`), one captured fixture with its expected message, and
the contract test. A developer then replaces the fixture with real captured payloads and
`normalize.py` and `inbound.py` with the channel's protocol. The README it writes says how the
folder grows: `inbound/` and `normalize/` packages for several transports, a non-HTTP edge
driven by the contract's `submit` hook, `outbound.py` with a sender and its `SenderContract`.
"""

from __future__ import annotations

import hashlib
import json
import typing
from pathlib import Path

from .message import Channel as ChannelName

FILES: dict[str, str] = {
    "__init__.py": '''"""The {name} channel."""

from .channel import CHANNEL

__all__ = ["CHANNEL"]
''',
    "channel.py": '''"""The {name} channel's declaration: what the kernel needs to run it."""

from intake import Channel

from . import inbound
from .settings import {Name}Accounts, {Name}Settings

CHANNEL = Channel(name="{name}", settings={Name}Settings, accounts={Name}Accounts,
                  routes=inbound.routes)
''',
    "settings.py": '''"""{Name}Settings (environment, `INTAKE_{NAME}_*`) and the accounts of `channels.{name}`."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class {Name}Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INTAKE_{NAME}_", extra="ignore", frozen=True)

    port: int = {port}
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)


class {Name}Account(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # The `account` of the messages it produces: it appears in keys and routing keys.
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]{{0,127}}$")
    name: str | None = None


class {Name}Accounts(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    accounts: list[{Name}Account] = Field(default_factory=list)

    def find(self, account_id: str) -> {Name}Account | None:
        return next((a for a in self.accounts if a.id == account_id), None)
''',
    "errors.py": '''"""The {name} channel's errors, each a kernel error with a stable reason."""

from intake import Rejected


class AccountUnknown(Rejected):
    reason = "account_unknown"
    status = 404


class PayloadInvalid(Rejected):
    reason = "payload_invalid"
    status = 422


class PayloadTooLarge(Rejected):
    reason = "payload_too_large"
    status = 413
''',
    "normalize.py": '''"""Pure functions from a parsed {name} payload to an intake Message; no I/O, no clock."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from intake import Identity, Message, Sender

from .errors import PayloadInvalid


class {Name}Event(BaseModel):
    """The payload as the source sends it (replace with the real protocol's fields)."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=1, max_length=200)
    text: str = Field(max_length=100_000)
    subject: str | None = Field(default=None, max_length=998)
    sender_name: str | None = Field(default=None, max_length=512)
    sender_email: str | None = Field(default=None, max_length=320)


def to_message(payload: Any, *, account: str, message_id: uuid.UUID, received_at: datetime,
               trace_id: str, raw: str | None) -> Message:
    try:
        event = {Name}Event.model_validate(payload)
    except ValidationError as exc:
        fields = {{".".join(map(str, e["loc"])): e["msg"] for e in exc.errors()}}
        raise PayloadInvalid("the payload is not a {name} event", fields=fields) from exc
    identities = ([Identity(kind="email", value=event.sender_email.lower())]
                  if event.sender_email else [])
    return Message(
        id=message_id, idempotency_key=f"{name}:{{account}}:{{event.id}}", channel="{name}",
        account=account, kind="message",
        sender=Sender(name=event.sender_name, identities=identities),
        subject=event.subject, text=event.text, received_at=received_at, raw=raw,
        trace_id=trace_id)
''',
    "inbound.py": '''"""The {name} edge: parse, store the raw payload, normalise, publish durably, answer."""

from __future__ import annotations

import uuid

import orjson
from aiohttp import web

from intake import ACCOUNTS, BLOBS, PUBLISHER, SERVICE_SETTINGS, Rejected, Transient, utcnow

from .errors import AccountUnknown, PayloadInvalid, PayloadTooLarge
from .normalize import to_message
from .settings import {Name}Accounts, {Name}Settings


def _error(exc: Rejected | Transient, status: int, **headers: str) -> web.Response:
    body = {{"error": exc.reason, "message": str(exc),
            "fields": getattr(exc, "details", {{}}).get("fields", {{}})}}
    return web.json_response(body, status=status, headers=headers)


async def receive(request: web.Request) -> web.Response:
    settings: {Name}Settings = request.app[SERVICE_SETTINGS]  # type: ignore[assignment]
    accounts: {Name}Accounts = request.app[ACCOUNTS]  # type: ignore[assignment]
    try:
        account = accounts.find(request.match_info["account"])
        if account is None:
            raise AccountUnknown(f"no {name} account {{request.match_info['account']!r}}")
        if (request.content_length or 0) > settings.max_body_bytes:
            raise PayloadTooLarge(f"the body is over {{settings.max_body_bytes}} bytes")
        body = await request.content.read(settings.max_body_bytes + 1)
        if len(body) > settings.max_body_bytes:
            raise PayloadTooLarge(f"the body is over {{settings.max_body_bytes}} bytes")
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise PayloadInvalid(f"the body is not JSON: {{exc}}") from exc
        message = to_message(payload, account=account.id, message_id=uuid.uuid4(),
                             received_at=utcnow(), trace_id=uuid.uuid4().hex,
                             raw=await request.app[BLOBS].put(body))
        await request.app[PUBLISHER].publish(message)  # returns once the message is durable
    except Rejected as exc:
        return _error(exc, getattr(exc, "status", 400))
    except Transient as exc:
        return _error(exc, 503, **{{"Retry-After": "5"}})
    return web.json_response({{"id": str(message.id),
                              "idempotency_key": message.idempotency_key}}, status=201)


def routes() -> list[web.RouteDef]:
    return [web.post("/{name}/{{account}}/events", receive)]
''',
    "README.md": '''# The {name} connector

Turns {name} events into the common message and publishes them to `intake.inbound`
(routing key `{name}.<account>`). Written by `intake new-connector {name}`: replace the
fixture with real captured payloads, then `normalize.py`, then `inbound.py`.

| | |
| --- | --- |
| start | `intake run {name}` |
| listens | HTTP {port} (`INTAKE_{NAME}_PORT`): `POST /{name}/{{account}}/events`, `/healthz`, `/readyz`, `/metrics` |
| answers | 201 once the message is durable; 400/404/413/422 with a JSON error; 503 with `Retry-After` |

## Settings

| variable | default | meaning |
| --- | --- | --- |
| `INTAKE_{NAME}_PORT` | {port} | HTTP port |
| `INTAKE_{NAME}_MAX_BODY_BYTES` | 1048576 | larger bodies get 413 |

Accounts come from `channels.{name}.accounts` in the config (`id`, `name`).

## Growing this folder

- **Several transports or payload kinds**: turn `inbound.py` into `inbound/` (one module per
  transport: `inbound/smtp.py`, `inbound/imap.py`) and `normalize.py` into `normalize/`;
  `intake connectors check` accepts either.
- **Not HTTP** (an SMTP listener, a TCP frame protocol): in `tests/test_contract.py`, override
  `submit(edge, fixture)` to call the entry point your transport calls (an SMTP handler, a frame
  parser) with `edge.publisher`, `edge.blobs` and `edge.accounts`, and return an `EdgeAnswer`
  (`accepted`, `deferred`). An edge that drops a repeat itself (answers success without
  publishing again) passes the key-stability check.
- **Replies** (agent answers going out): write `outbound.py` with `{Name}Sender`, a class taking
  an `intake.SenderKit` whose `async send(OutboundMessage)` returns `Sent`, `Failed(reason)`,
  `RetryLater(reason)` or `Taken()`; declare `CHANNEL = Channel(..., sender={Name}Sender)`. The
  kernel consumes `intake.outbound.{name}`, sends each message at most once and publishes its
  `DeliveryResult`. Add `tests/test_outbound.py` with a subclass of
  `intake.testing.SenderContract`.
- **State that outlives the process** (cursors, pending replies): `kit.state` (an
  `intake.StateStore`): `namespace(name)` for key/values, `queue(name)` for durable work.
- **Edge helpers**: `intake.RateLimiter` and `client_address`, `clean_text`, `clean_email`,
  `clean_phone`, `sanitize_filename` and `clean_original_filename` for attachments,
  `blobs.put_stream` for large payloads, `reference_for("XY", key)` for a quotable reference.
- **Imports**: only `intake` (its `__all__`), the standard library and your protocol's
  library; never `intake.<module>`, `aio_pika`, `sqlalchemy`, `router`, `ticket_core` or
  another connector (`intake connectors check` refuses them).
''',
    "example.yaml": '''# The {name} section of the config: merge it into INTAKE_CONFIG.
channels:
  {name}:
    accounts:
      - id: main
        name: Main {name} account
''',
    "fixtures/sample_event.json": '''{{"id": "evt-1001", "subject": "Where is my order?", "text": "It has not arrived.",
 "sender_name": "Li Wei", "sender_email": "Li.Wei@Example.CN"}}
''',
    "fixtures/sample_event.headers.json": '''{{"Content-Type": "application/json"}}
''',
    "tests/__init__.py": "",
    "tests/test_contract.py": '''"""The kernel's connector contract, run against the {name} connector's fixtures."""

from __future__ import annotations

import json
from pathlib import Path

from typing import Any

from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from connectors.{name} import CHANNEL
from intake.testing import ConnectorContract

EXAMPLE = Path(__file__).resolve().parent.parent / "example.yaml"


class Test{Name}Contract(ConnectorContract):
    channel = CHANNEL
    config = EXAMPLE

    async def send_fixture(self, client: TestClient[Any, Any], fixture: Path) -> ClientResponse:
        headers = json.loads(fixture.with_name(fixture.stem + ".headers.json").read_bytes())
        return await client.post("/{name}/main/events", data=fixture.read_bytes(),
                                 headers=headers)
''',
}

EXPECTED = {
    "schema_version": 1, "id": "<id>", "idempotency_key": "{name}:main:evt-1001",
    "channel": "{name}", "account": "main", "kind": "message",
    "sender": {"name": "Li Wei", "identities": [
        {"kind": "email", "value": "li.wei@example.cn", "verified": False}]},
    "thread": None, "subject": "Where is my order?", "text": "It has not arrived.",
    "html": None, "attachments": [], "call": None, "form": None, "event": None, "flags": [],
    "channel_data": None, "occurred_at": None, "received_at": "<received_at>",
    "raw": "sha256:{raw}", "trace_id": "<trace_id>", "route": None,
}


# The ports DESIGN.md gives each channel's HTTP listener.
DESIGN_PORTS = {"webform": 8001, "sdk": 8002, "wechat": 8003, "telephony": 8004, "email": 8005,
                "api": 8007}


def new_connector(name: str, connectors_dir: Path, port: int | None = None) -> Path:
    """Write `connectors_dir/<name>/`; refuse a name outside the message's channel vocabulary."""
    known = typing.get_args(ChannelName)
    if name not in known:
        raise ValueError(f"{name!r} is not a channel of the common message ({', '.join(known)});"
                         " add it to `Channel` in intake/message.py (and run "
                         "`intake schema --write`) first")
    folder = connectors_dir / name
    if folder.exists():
        raise ValueError(f"{folder} exists already")
    values = {"name": name, "Name": name.title().replace("_", ""), "NAME": name.upper(),
              "port": port or DESIGN_PORTS.get(name, 8010)}
    for relative, template in FILES.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(template.format(**values), encoding="utf-8")
    raw = hashlib.sha256((folder / "fixtures/sample_event.json").read_bytes()).hexdigest()
    expected = json.loads(json.dumps(EXPECTED).replace("{name}", name).replace("{raw}", raw))
    (folder / "fixtures/sample_event.expected.json").write_text(
        json.dumps(expected, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return folder
