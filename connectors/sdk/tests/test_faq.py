"""FAQ: Chinese and English search, safe HTML, hostile queries, drafts and hot reload."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from connectors.sdk import CHANNEL
from connectors.sdk.inbound import faq as faq_module
from connectors.sdk.settings import SdkApp
from intake.testing import ContractEdge, RecordingPublisher

from .conftest import EXAMPLE, Sdk

REPO = Path(__file__).resolve().parents[3]
SEARCHER = SdkApp(id="demo-widget")


async def search(sdk: Sdk, q: str, **params: Any) -> tuple[int, Any]:
    response = await sdk.client.get(f"{sdk.base}/faq/search", params={"q": q, **params})
    return response.status, await response.json()


@pytest.fixture
async def shipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Sdk]:
    monkeypatch.setenv("INTAKE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("INTAKE_SDK_FAQ_DIR", str(REPO / "deploy" / "faq"))
    edge = await ContractEdge.start(CHANNEL, EXAMPLE, RecordingPublisher())
    yield Sdk(edge, "demo-widget")
    await edge.close()


@pytest.mark.parametrize(("query", "article"), [
    ("退货", "returns"), ("退貨", "returns"), ("怎么退款", "returns"), ("return", "returns"),
    ("发票", "invoices"), ("Invoice", "invoices"), ("快递", "shipping"),
    ("忘记密码", "password-reset"), ("password", "password-reset"), ("会员积分", "membership"),
    ("ＰＡＳＳＷＯＲＤ", "password-reset"),
])
async def test_the_shipped_articles_are_found(shipped: Sdk, query: str, article: str) -> None:
    status, answer = await search(shipped, query)
    assert status == 200
    assert answer["items"] and answer["items"][0]["id"] == article, answer
    assert set(answer["items"][0]) == {"id", "title", "snippet", "score"}


async def test_a_snippet_is_escaped_and_highlighted(shipped: Sdk) -> None:
    _, answer = await search(shipped, "退货")
    snippet = answer["items"][0]["snippet"]
    assert "<mark>退货</mark>" in snippet and "<script" not in snippet


@pytest.mark.parametrize("query", ['"退货', "*", "NEAR(a b)", "a AND b OR NOT c", "((", "]]",
                                   "x" * 500, "'; DROP TABLE x; --", "\u202e", "%", "\\"])
async def test_hostile_queries_answer_200(shipped: Sdk, query: str) -> None:
    status, answer = await search(shipped, query)
    assert status == 200 and isinstance(answer["items"], list)


async def test_an_empty_query_is_422_and_drafts_and_unknowns_are_404(shipped: Sdk) -> None:
    assert (await search(shipped, ""))[0] == 422
    assert (await search(shipped, "   "))[0] == 422
    _, answer = await search(shipped, "即将上线")
    assert all(item["id"] != "draft-new-feature" for item in answer["items"])
    for article in ("draft-new-feature", "nope", "..%2F..%2Fetc"):
        response = await shipped.client.get(f"{shipped.base}/faq/articles/{article}")
        assert response.status == 404
    response = await shipped.client.get(f"{shipped.base}/faq/articles/returns")
    body = await response.json()
    assert body["title"].startswith("如何申请退货") and "<ol>" in body["html"]
    assert set(body) == {"id", "title", "html", "text", "tags", "locale", "updated_at"}


async def test_no_script_reaches_an_app_and_the_folder_is_reloaded(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "faq"
    folder.mkdir()
    (folder / "evil.md").write_text(
        "# Evil\n\n<script>alert(1)</script> [x](javascript:alert(1)) "
        "[y](data:text/html,hi) ![i](https://img.example/a.png \"t\") <img src=x onerror=1>"
        " [ok](https://shop.example/help) [rel](/help)\n", encoding="utf-8")
    (folder / "broken.md").write_text("---\ntitle: [unclosed\n---\nbody\n", encoding="utf-8")
    (folder / "latin1.md").write_bytes("# Caf\xe9\n".encode("latin-1"))
    (folder / "other-app.md").write_text("---\napps: [demo-app]\n---\n# 内部 internal\n",
                                         encoding="utf-8")
    monkeypatch.setenv("INTAKE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("INTAKE_SDK_FAQ_DIR", str(folder))
    monkeypatch.setattr(faq_module, "RESCAN_S", 0.0)
    edge = await ContractEdge.start(CHANNEL, EXAMPLE, RecordingPublisher())
    try:
        sdk = Sdk(edge, "demo-widget")
        response = await sdk.client.get(f"{sdk.base}/faq/articles/evil")
        page = (await response.json())["html"]
        for bad in ("<script", 'href="javascript:', 'href="data:', "<img src=x"):
            assert bad not in page, page
        assert re.search(r"<[^>]*\bon\w+=", page) is None, page
        assert 'href="https://shop.example/help"' in page and 'href="/help"' in page
        assert [i["id"] for i in (await search(sdk, "evil"))[1]["items"]] == ["evil"]
        assert (await search(sdk, "internal"))[1]["items"] == []
        assert (await sdk.client.get(f"{sdk.base}/faq/articles/other-app")).status == 404
        assert (await search(sdk, "broken"))[1]["items"] == []  # skipped, logged
        (folder / "new.md").write_text("# 新品预售 Presale\n\n预售说明\n", encoding="utf-8")
        await asyncio.sleep(0.05)
        assert [i["id"] for i in (await search(sdk, "预售"))[1]["items"]] == ["new"]
    finally:
        await edge.close()


def test_a_rescan_parses_only_the_files_that_changed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("returns", "shipping", "invoices"):
        (tmp_path / f"{name}.md").write_text(f"# {name}\n\n{name} 说明\n", encoding="utf-8")
    parsed: list[str] = []
    parse_file = faq_module.parse_file

    def counting(path: Path) -> faq_module.Article:
        parsed.append(path.name)
        return parse_file(path)

    monkeypatch.setattr(faq_module, "parse_file", counting)
    articles = faq_module.Faq(tmp_path, [])
    articles.load()
    assert sorted(parsed) == ["invoices.md", "returns.md", "shipping.md"]
    parsed.clear()
    (tmp_path / "shipping.md").write_text("# shipping\n\n顺丰 快递 说明\n", encoding="utf-8")
    (tmp_path / "invoices.md").unlink()
    articles.load()
    assert parsed == ["shipping.md"]
    assert sorted(articles.articles) == ["returns", "shipping"]
    assert [hit["id"] for hit in articles.search(SEARCHER, "顺丰", 10)] == ["shipping"]
    assert articles.search(SEARCHER, "invoices", 10) == []
