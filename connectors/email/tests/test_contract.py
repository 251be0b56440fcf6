"""The kernel's connector contract, run against the email connector's mail fixtures."""

from __future__ import annotations

import json
from pathlib import Path

from connectors.email import CHANNEL
from connectors.email.inbound import Deliverer, ParserPool
from connectors.email.inbound.smtp import EmailHandler
from intake.testing import ConnectorContract, ContractEdge, EdgeAnswer

EXAMPLE = Path(__file__).resolve().parent.parent / "example.yaml"


def handler_for(edge: ContractEdge) -> EmailHandler:
    """The SMTP handler on the edge's in-memory publisher and blob store (parsing inline)."""
    if "handler" not in edge.extras:
        deliverer = Deliverer(edge.publisher, edge.blobs, edge.accounts,  # type: ignore[arg-type]
                              edge.settings, ParserPool(0, 30.0))  # type: ignore[arg-type]
        edge.extras["handler"] = EmailHandler(deliverer)
    handler: EmailHandler = edge.extras["handler"]
    return handler


async def submit_mail(edge: ContractEdge, fixture: Path) -> EdgeAnswer:
    envelope = json.loads(fixture.with_name(fixture.stem + ".headers.json").read_text())
    answer = await handler_for(edge).deliver(fixture.read_bytes(), envelope["mail_from"],
                                             envelope["rcpt_to"])
    code = int(answer[:3])
    return EdgeAnswer(answer, code == 250, 400 <= code < 500)


class TestEmailContract(ConnectorContract):
    channel = CHANNEL
    config = EXAMPLE

    async def submit(self, edge: ContractEdge, fixture: Path) -> EdgeAnswer:
        # The entry point aiosmtpd's handle_DATA calls, with the transaction's envelope.
        return await submit_mail(edge, fixture)
