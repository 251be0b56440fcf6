"""FAQ self-service: Markdown articles searched in Chinese and English, served as safe HTML.

Articles are Markdown files in a folder (`channels.sdk.faq.dir`, `INTAKE_SDK_FAQ_DIR`), one per
article, with optional YAML front matter (`title`, `id` (default: the file name), `tags`,
`locale`, `draft`, `apps`; without a title the first `#` heading is), plus inline `articles` in
the config. Markdown is rendered by markdown-it-py with raw HTML off and only http, https,
mailto and relative links, then cleaned by nh3: no script reaches an app. The folder is
rescanned (by modification times) at most every `RESCAN_S` when searched: a change is
searchable within seconds, without a restart; an unreadable file is skipped with a logged
error naming it.

Search: text and query are folded alike (NFKC, case folding, Traditional to Simplified with
OpenCC `t2s`), cut by jieba's search mode plus CJK bigrams (so a two-character word such as
退货 and names jieba does not know still match) and Latin words, and scored by BM25 over
title (weight 3), tags (2) and body (1). The query is only ever tokens: nothing of it reaches
a query language.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import html
import logging
import math
import re
import time
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jieba
import nh3
import opencc
import yaml
from markdown_it import MarkdownIt

from intake import get_logger

from ..errors import Invalid, NotFound
from ..settings import FaqArticle, SdkApp

RESCAN_S = 5.0
MAX_QUERY_CHARS = 500
SNIPPET_CHARS = 80
WEIGHTS = {"title": 3.0, "tags": 2.0, "body": 1.0}
K1, B = 1.2, 0.75
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
_WORD = re.compile(r"[0-9a-z]+(?:['’][a-z]+)?")
_FRONT_MATTER = re.compile(r"\A---\s*\n(.*?)\n---\s*(?:\n|\Z)", re.S)
_HEADING = re.compile(r"^#\s+(.+?)\s*#*\s*$", re.M)
log = get_logger(service="sdk", component="faq")
jieba.setLogLevel(logging.WARNING)


@functools.lru_cache(maxsize=1)
def _t2s() -> Any:
    return opencc.OpenCC("t2s")


def fold(text: str) -> str:
    return str(_t2s().convert(unicodedata.normalize("NFKC", text).casefold()))


def tokens(text: str) -> list[str]:
    """Search terms of `text`: jieba's search-mode words, CJK bigrams and Latin words."""
    folded = fold(text)
    terms = [t for t in jieba.cut_for_search(folded) if t.strip() and not _WORD.fullmatch(t)
             and _CJK.search(t)]
    for run in _CJK.findall(folded):
        terms += [run[i:i + 2] for i in range(len(run) - 1)] or [run]
    terms += _WORD.findall(folded)
    return terms


def _link_allowed(url: str) -> bool:
    scheme = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*):", url.strip())
    return scheme is None or scheme.group(1).lower() in ("http", "https", "mailto")


@functools.lru_cache(maxsize=1)
def _markdown() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": False})
    md.validateLink = _link_allowed  # type: ignore[method-assign]
    return md


def render(markdown: str) -> tuple[str, str]:
    """(safe HTML, plain text) of an article body."""
    raw = _markdown().render(markdown)
    safe = nh3.clean(raw, url_schemes={"http", "https", "mailto"}, link_rel="noopener noreferrer")
    text = html.unescape(nh3.clean(raw, tags=set()))
    return safe, re.sub(r"\s+", " ", text).strip()


@dataclass
class Article:
    id: str
    title: str
    tags: list[str]
    locale: str | None
    apps: list[str] | None
    draft: bool
    html: str
    text: str
    updated_at: str
    terms: dict[str, Counter[str]] = field(default_factory=dict)

    def visible_to(self, app: SdkApp) -> bool:
        return not self.draft and (self.apps is None or app.id in self.apps)

    def view(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "html": self.html, "text": self.text,
                "tags": self.tags, "locale": self.locale, "updated_at": self.updated_at}


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def parse_file(path: Path) -> Article:
    """One article file; ValueError (naming the problem) when it cannot be read."""
    try:
        source = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError("not UTF-8") from exc
    meta: dict[str, Any] = {}
    match = _FRONT_MATTER.match(source)
    if match:
        try:
            loaded = yaml.safe_load(match.group(1))
        except yaml.YAMLError as exc:
            raise ValueError(f"broken front matter: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ValueError("the front matter is not a mapping")
        meta = loaded or {}
        source = source[match.end():]
    title = meta.get("title")
    if not title:
        heading = _HEADING.search(source)
        title = heading.group(1) if heading else path.stem
    article = FaqArticle.model_validate({
        "id": str(meta.get("id") or path.stem), "title": str(title), "body": source,
        "tags": [str(t) for t in meta.get("tags") or []], "locale": meta.get("locale"),
        "apps": meta.get("apps")})
    return build(article, draft=bool(meta.get("draft", False)), updated=path.stat().st_mtime)


def build(article: FaqArticle, *, draft: bool = False, updated: float = 0.0) -> Article:
    safe, text = render(article.body)
    built = Article(article.id, article.title, list(article.tags), article.locale,
                    article.apps, draft, safe, text, _iso(updated))
    built.terms = {"title": Counter(tokens(article.title)),
                   "tags": Counter(t for tag in article.tags for t in tokens(tag)),
                   "body": Counter(tokens(text))}
    return built


class Faq:
    """The articles of the folder and the config, and their index."""

    def __init__(self, folder: Path | None, inline: list[FaqArticle]) -> None:
        self.folder = folder
        self.inline = inline
        self.articles: dict[str, Article] = {}
        self.stamp: tuple[tuple[str, float, int], ...] | None = None
        self.checked = 0.0
        self.lock = asyncio.Lock()
        self.parsed: dict[tuple[str, float, int], Article | None] = {}  # by name, mtime, size
        # term → [(article, its BM25 score for the term)]: a search reads only the postings of
        # its terms, not every article (2,000 articles: well under a millisecond)
        self.postings: dict[str, list[tuple[Article, float]]] = {}

    def _stamp(self) -> tuple[tuple[str, float, int], ...]:
        if self.folder is None or not self.folder.is_dir():
            return ()
        found = []
        for path in sorted(self.folder.glob("*.md")):
            try:
                stat = path.stat()
            except OSError:
                continue
            found.append((path.name, stat.st_mtime, stat.st_size))
        return tuple(found)

    def load(self) -> None:
        """Rescan the folder if it changed (blocking: run in a thread)."""
        stamp = self._stamp()
        if stamp == self.stamp:
            return
        articles: dict[str, Article] = {a.id: build(a) for a in self.inline}
        parsed: dict[tuple[str, float, int], Article | None] = {}
        for entry in stamp:
            assert self.folder is not None
            # an unchanged file keeps its parse: tokenising is the slow part (about 15 ms an
            # article), and one edited article must not cost a rescan of thousands
            if entry in self.parsed:
                article = self.parsed[entry]
            else:
                try:
                    article = parse_file(self.folder / entry[0])
                except (ValueError, OSError) as exc:
                    log.error("faq_article_skipped", file=str(self.folder / entry[0]),
                              error=str(exc))
                    article = None
            parsed[entry] = article
            if article is not None:
                articles[article.id] = article
        self._index(articles)
        self.parsed = parsed
        self.stamp = stamp

    def _index(self, articles: dict[str, Article]) -> None:
        frequency: Counter[str] = Counter()
        for article in articles.values():
            frequency.update({t for counts in article.terms.values() for t in counts})
        total = len(articles)
        count = max(1, total)
        lengths = {name: sum(sum(a.terms[name].values()) for a in articles.values()) / count
                   for name in WEIGHTS}
        postings: dict[str, list[tuple[Article, float]]] = {}
        for article in articles.values():
            sizes = {name: sum(article.terms[name].values()) for name in WEIGHTS}
            for term in {t for counts in article.terms.values() for t in counts}:
                df = frequency[term]
                idf = math.log(1 + (total - df + 0.5) / (df + 0.5))
                score = 0.0
                for name, weight in WEIGHTS.items():
                    tf = article.terms[name].get(term, 0)
                    if tf:
                        norm = 1 - B + B * sizes[name] / (lengths[name] or 1)
                        score += weight * idf * tf * (K1 + 1) / (tf + K1 * norm)
                postings.setdefault(term, []).append((article, score))
        self.postings = postings
        self.articles = articles

    async def fresh(self) -> None:
        if self.stamp is not None and (time.monotonic() - self.checked < RESCAN_S
                                       or self.lock.locked()):
            return  # searches go on with the index they have while a rescan runs
        async with self.lock:
            if time.monotonic() - self.checked >= RESCAN_S or self.stamp is None:
                await asyncio.to_thread(self.load)
                self.checked = time.monotonic()

    def search(self, app: SdkApp, query: str, limit: int) -> list[dict[str, Any]]:
        terms = list(dict.fromkeys(tokens(query)))
        scores: dict[str, float] = {}
        found: dict[str, Article] = {}
        for term in terms:
            for article, score in self.postings.get(term, ()):
                scores[article.id] = scores.get(article.id, 0.0) + score
                found[article.id] = article
        best = heapq.nsmallest(limit, ((-score, name) for name, score in scores.items()
                                       if score > 0 and found[name].visible_to(app)))
        return [{"id": name, "title": found[name].title,
                 "snippet": snippet(found[name].text, terms), "score": round(-score, 4)}
                for score, name in best]


def snippet(text: str, terms: list[str]) -> str:
    """About SNIPPET_CHARS of the body around the first term found, escaped, terms in <mark>."""
    folded = fold(text)
    if len(folded) != len(text):
        text = folded  # positions must line up; the folded text is shown then
    hits = sorted((folded.find(t), t) for t in terms if t and folded.find(t) >= 0)
    start = max(0, hits[0][0] - SNIPPET_CHARS // 3) if hits else 0
    window = text[start:start + SNIPPET_CHARS]
    window_folded = folded[start:start + SNIPPET_CHARS]
    marks = sorted({(m.start(), m.end()) for t in sorted(set(terms), key=len, reverse=True)
                    for m in re.finditer(re.escape(t), window_folded)})
    out, position = [], 0
    for begin, end in marks:
        if begin < position:
            continue
        out += [html.escape(window[position:begin]), "<mark>",
                html.escape(window[begin:end]), "</mark>"]
        position = end
    out.append(html.escape(window[position:]))
    return ("…" if start else "") + "".join(out) + ("…" if start + SNIPPET_CHARS < len(text)
                                                    else "")


async def search(request: Any, faq: Faq, app: SdkApp) -> dict[str, Any]:
    query = request.query.get("q", "")
    if not query.strip():
        raise Invalid("Send a search text in q.", "missing", {"q": "required"})
    try:
        limit = max(1, min(50, int(request.query.get("limit", "10"))))
    except ValueError as exc:
        raise Invalid("limit is a number from 1 to 50.", "invalid_limit",
                      {"limit": "1 to 50"}) from exc
    await faq.fresh()
    items = await asyncio.to_thread(faq.search, app, query[:MAX_QUERY_CHARS], limit)
    return {"items": items}


async def article(request: Any, faq: Faq, app: SdkApp) -> dict[str, Any]:
    await faq.fresh()
    found = faq.articles.get(request.match_info["article_id"])
    if found is None or not found.visible_to(app):
        raise NotFound("There is no such article.")
    return found.view()
