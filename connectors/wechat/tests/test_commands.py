"""`intake wechat simulate`: every type it builds is accepted by the connector, in every mode."""

from __future__ import annotations

import argparse

import pytest

from connectors.wechat.inbound import simulate
from connectors.wechat.settings import WechatAccounts

from .conftest import Edge
from .fake_wechat import Media


@pytest.mark.parametrize("account_id", ["wx2c2769f8efd9abc2", "wx1111111111111111",
                                        "wx2222222222222222", "wx5823bf96d3bd56c7-218"])
async def test_every_simulated_type_is_accepted(edge: Edge, account_id: str) -> None:
    accounts = edge.runtime.accounts
    assert isinstance(accounts, WechatAccounts)
    account = accounts.find(account_id)
    assert account is not None
    edge.fake.media["DEMO_MEDIA_ID"] = Media(body=b"demo")
    for number, kind in enumerate(simulate.TYPES):
        xml = simulate.build_xml(account, kind, "oSim", "你好 ]]> <&>", "DEMO_MEDIA_ID",
                                 str(number + 1))
        query, body = simulate.signed_request(account, xml)
        response = await edge.client.post(f"/wechat/{account_id}", params=query, data=body)
        assert response.status == 200, (kind, await response.text())
    await edge.drain_work()
    texts = [m.text for m in edge.publisher.messages if m.kind == "message"]
    assert "你好 ]]> <&>" in texts
    assert sum(m.kind == "event" for m in edge.publisher.messages) == 5


async def test_simulate_posts_to_the_running_connector(
        edge: Edge, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTAKE_TICKET_CORE_URL", "http://127.0.0.1:9")
    args = argparse.Namespace(account="wx5823bf96d3bd56c7-218", type="text", sender="u1",
                              text="打印机坏了", media_id="M", url=str(edge.client.make_url("")),
                              wait_s=0.2)
    assert await simulate.simulate(args) == 1  # accepted, but no ticket core to ask
    out = capsys.readouterr().out
    assert "\n200 (empty: success)\n" in out and "no ticket yet" in out
    assert edge.publisher.messages[0].text == "打印机坏了"
