"""The kernel's contracts, run against the loopback connector: its frame edge and its sender."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from intake import Identity
from intake.testing import ConnectorContract, ContractEdge, EdgeAnswer, SenderContract

from .. import CHANNEL
from ..inbound import FrameEdge
from ..outbound import LoopbackSender, delivered
from ..settings import LoopbackAccounts, LoopbackSettings

EXAMPLE = Path(__file__).resolve().parent.parent / "example.yaml"


class TestLoopbackContract(ConnectorContract):
    channel = CHANNEL
    config = EXAMPLE

    async def submit(self, edge: ContractEdge, fixture: Path) -> EdgeAnswer:
        # Not HTTP: the frame transport calls handle_frame with each line it reads.
        assert isinstance(edge.accounts, LoopbackAccounts)
        frames = edge.extras.setdefault("frames", FrameEdge(edge.publisher, edge.accounts))
        answer = await frames.handle_frame(fixture.read_bytes())
        return EdgeAnswer(answer, accepted=answer == "OK", deferred=answer == "RETRY")

    def test_channel_name_is_its_folder(self) -> None:
        pytest.skip("the loopback stands in for the `api` channel; its folder says what it is")

    async def test_a_malformed_frame_is_refused_for_good(self, edge: ContractEdge) -> None:
        answer = await self.submit(edge, self.folder() / "fixtures" / "bad_frame.txt")
        assert (answer.status, answer.accepted, answer.deferred) == (
            "ERR frame_malformed", False, False)


class LoopbackSenderParts:
    channel = CHANNEL
    account = "loop"
    recipient = Identity(kind="email", value="ann@example.com")

    def sender_settings(self, tmp_path: Path) -> Any:
        return LoopbackSettings(sink_path=tmp_path / "sink.jsonl")

    def delivered(self, sender: Any) -> list[str]:
        assert isinstance(sender, LoopbackSender)
        return delivered(sender.sink)


class TestLoopbackSenderContract(LoopbackSenderParts, SenderContract):
    failure = "failed"
    failure_reason = "sink_unwritable"

    def break_transport(self, sender: Any) -> None:
        sender.fail_next = "sink_unwritable"


class TestLoopbackRetryingSenderContract(LoopbackSenderParts, SenderContract):
    failure = "retried"

    def break_transport(self, sender: Any) -> None:
        sender.retry_next = "sink_busy"
