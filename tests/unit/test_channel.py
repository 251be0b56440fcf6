"""A Channel's declaration becomes its service: inbound routes, listeners, tasks, sender."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import web
from pydantic import BaseModel
from pydantic_settings import BaseSettings, SettingsConfigDict

from intake import Channel, Inbound, Listener, Task
from intake.config import load_document
from intake.settings import IntakeSettings


class ProbeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INTAKE_PROBE_")
    port: int = 8123


class ProbeAccounts(BaseModel):
    lines: list[str] = []


async def hello(request: web.Request) -> web.Response:
    return web.Response(text="hi")


def routes() -> list[web.RouteDef]:
    return [web.get("/probe", hello)]


async def open_server(app: web.Application) -> asyncio.Server:
    raise NotImplementedError


async def poll(app: web.Application) -> None:
    raise NotImplementedError


class ProbeSender:
    def __init__(self, kit: object) -> None:
        self.kit = kit


def test_a_channel_without_http_routes_declares_listeners_tasks_and_a_sender(
        tmp_path: Path) -> None:
    config = tmp_path / "intake.yaml"
    config.write_text("channels:\n  probe:\n    lines: [a, b]\n", encoding="utf-8")
    channel = Channel(name="probe", settings=ProbeSettings, accounts=ProbeAccounts,
                      inbound=Inbound(listeners=[Listener("pbx", open_server)],
                                      tasks=[Task("ami", poll, critical=False)]),
                      sender=ProbeSender)
    service = channel.build_service(IntakeSettings(), load_document(config))
    assert service.port == 8123 and service.routes == []
    assert [listener.component for listener in service.listeners] == ["listener:pbx"]
    assert [(task.component, task.critical) for task in service.tasks] == [("task:ami", False)]
    assert len(service.senders) == 1  # the kernel's runner around ProbeSender


def test_routes_may_be_given_alone_or_as_inbound(tmp_path: Path) -> None:
    short = Channel(name="probe", settings=ProbeSettings, accounts=ProbeAccounts, routes=routes)
    full = Channel(name="probe", settings=ProbeSettings, accounts=ProbeAccounts,
                   inbound=Inbound(routes=routes))
    assert short.http_routes() == full.http_routes() == routes()
    assert full.sender is None and full.commands == ()


def test_a_channels_ready_checks_follow_the_outbox_check(tmp_path: Path) -> None:
    async def lines(app: web.Application) -> dict[str, object]:
        return {"lines": {}}

    config = tmp_path / "intake.yaml"
    config.write_text("channels: {}\n")
    channel = Channel(name="probe", settings=ProbeSettings, accounts=ProbeAccounts,
                      routes=routes, ready_checks=[lines])
    service = channel.build_service(IntakeSettings(), load_document(config))
    assert [check.__name__ for check in service.ready_checks] == ["outbox_ready", "lines"]
