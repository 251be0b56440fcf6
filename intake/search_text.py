"""The one search tokenizer: what a text is indexed as and what a query asks for, alike.

Text is folded (NFKC, so full-width `ＳＦ１２３` is `SF123`; Traditional to Simplified with
OpenCC `t2s`, so `退貨` is `退货`; lower case), then cut into tokens:

* a run of letters and digits that is not CJK (`sf123`, `refund`, `20261206`) is one word,
  matched by prefix at query time (`sf12` finds `sf123`);
* a CJK run (Han, kana, hangul) is its overlapping unigrams and bigrams, interleaved:
  `我要退款` is `我 我要 要 要退 退 退款 款`. Any substring of the run is then a phrase of
  consecutive tokens (`退款` is `退 退款 款`), so one- and two-character words match exactly,
  which a trigram index cannot do, and longer ones by adjacency, with no dictionary;
* everything else separates tokens and never reaches a query language.

A query (`parse_query`) is a list of phrases, each a list of tokens that must be adjacent; a
ticket must match every phrase. A quoted part is one phrase, and so is each whitespace-separated
part outside quotes (`退款 发票`: both words, anywhere; `"refund request"`: adjacent). An
unmatched quote is ignored. `tsquery` and `fts5_match` write a query for PostgreSQL and SQLite
FTS5 from tokens only, each token quoted: user input is data, never syntax.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import opencc

__all__ = ["MAX_QUERY_CHARS", "MAX_QUERY_TOKENS", "MAX_WORD_CHARS", "Phrase", "QueryTooLong",
           "Token", "fold", "fts5_match", "highlight", "index_tokens", "parse_query", "tsquery",
           "tsvector"]

MAX_WORD_CHARS = 64  # a longer word is cut, at index and query time alike
MAX_QUERY_CHARS = 1000
MAX_QUERY_TOKENS = 200
TSVECTOR_MAX_POSITION = 16383  # PostgreSQL's limit (larger positions are set to it)
TSVECTOR_MAX_POSITIONS = 255  # per lexeme; PostgreSQL keeps at most 256

# Han (with extensions and compatibility ideographs), kana, hangul, the iteration mark 々.
_CJK_RANGES = ((0x1100, 0x11FF), (0x3005, 0x3007), (0x3040, 0x30FF), (0x3130, 0x318F),
               (0x31F0, 0x31FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xA960, 0xA97F),
               (0xAC00, 0xD7FF), (0xF900, 0xFAFF), (0xFF66, 0xFF9F), (0x20000, 0x3134F))


class QueryTooLong(ValueError):
    """The query has more characters or tokens than a search takes."""


@dataclass(frozen=True, slots=True)
class Token:
    text: str
    word: bool  # a Latin/digit word (prefix-matched in queries); else a CJK unigram or bigram


Phrase = tuple[Token, ...]


@functools.lru_cache(maxsize=1)
def _t2s() -> Any:
    return opencc.OpenCC("t2s")


def fold(text: str) -> str:
    """NFKC, Traditional to Simplified, lower case: what both sides compare."""
    return str(_t2s().convert(unicodedata.normalize("NFKC", text))).lower()


_CJK_CLASS = "".join(f"\\U{low:08x}-\\U{high:08x}" for low, high in _CJK_RANGES)
# A CJK run, or a run of other letters and digits (`\\w` less `_` and CJK): one C-speed pass.
_RUNS = re.compile(f"([{_CJK_CLASS}]+)|((?:(?![{_CJK_CLASS}])[^\\W_])+)")


def _runs(folded: str) -> Iterator[tuple[int, str]]:
    """(kind, run) of the folded text's runs in order: 1 a word, 2 CJK."""
    for match in _RUNS.finditer(folded):
        cjk, word = match.groups()
        yield (2, cjk) if cjk else (1, word)


def _tokens(folded: str) -> list[Token]:
    tokens: list[Token] = []
    for kind, run in _runs(folded):
        if kind == 1:
            tokens.append(Token(run[:MAX_WORD_CHARS], True))
            continue
        for index, char in enumerate(run):
            tokens.append(Token(char, False))
            if index + 1 < len(run):
                tokens.append(Token(run[index:index + 2], False))
    return tokens


def index_tokens(text: str) -> list[str]:
    """The token stream of `text` as it is indexed (positions are list indexes)."""
    tokens: list[str] = []
    for match in _RUNS.finditer(fold(text)):
        cjk, word = match.groups()
        if word:
            tokens.append(word[:MAX_WORD_CHARS])
            continue
        # c0 c0c1 c1 c1c2 … cn: the unigrams at even, the bigrams at odd offsets.
        pairs = [cjk[i:i + 2] for i in range(len(cjk) - 1)]
        stream = [""] * (2 * len(cjk) - 1)
        stream[0::2] = cjk
        stream[1::2] = pairs
        tokens.extend(stream)
    return tokens


def _phrase(part: str) -> Phrase:
    """The tokens of one query part, without the unigrams its end bigrams already imply."""
    tokens = _tokens(fold(part))
    if len(tokens) >= 2 and not tokens[0].word and not tokens[1].word \
            and tokens[1].text.startswith(tokens[0].text) and len(tokens[1].text) == 2:
        tokens = tokens[1:]
    if len(tokens) >= 2 and not tokens[-1].word and not tokens[-2].word \
            and tokens[-2].text.endswith(tokens[-1].text) and len(tokens[-2].text) == 2:
        tokens = tokens[:-1]
    return tuple(tokens)


def parse_query(query: str) -> list[Phrase]:
    """The phrases of a search box's text; every one must match. Raises QueryTooLong."""
    if len(query) > MAX_QUERY_CHARS:
        raise QueryTooLong(f"at most {MAX_QUERY_CHARS} characters")
    normalized = unicodedata.normalize("NFKC", query)  # full-width quotes and spaces too
    pieces = normalized.split('"')
    if len(pieces) % 2 == 0:  # an unmatched quote: ignored
        pieces[-2:] = [pieces[-2] + " " + pieces[-1]]
    parts: list[str] = []
    for index, piece in enumerate(pieces):
        parts.extend([piece] if index % 2 else piece.split())
    phrases: list[Phrase] = []
    for part in parts:
        phrase = _phrase(part)
        if phrase and phrase not in phrases:
            phrases.append(phrase)
    if sum(len(phrase) for phrase in phrases) > MAX_QUERY_TOKENS:
        raise QueryTooLong(f"at most {MAX_QUERY_TOKENS} search tokens")
    return phrases


def _pg_quoted(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


def tsquery(phrases: Sequence[Phrase]) -> str:
    """A PostgreSQL `tsquery` literal: phrases joined by `&`, tokens by `<->`, words `:*`."""
    return " & ".join(
        "(" + " <-> ".join(_pg_quoted(t.text) + (":*" if t.word else "") for t in phrase) + ")"
        for phrase in phrases)


def fts5_match(phrases: Sequence[Phrase]) -> str:
    """An FTS5 MATCH expression: phrases joined by AND, tokens by `+`, words with `*`."""
    return " AND ".join(
        " + ".join('"' + t.text.replace('"', '""') + '"' + ("*" if t.word else "")
                   for t in phrase)
        for phrase in phrases)


def tsvector(tokens: Sequence[str]) -> str:
    """A PostgreSQL `tsvector` literal of a token stream, positions from 1."""
    positions: dict[str, list[int]] = {}
    for index, token in enumerate(tokens):
        found = positions.setdefault(token, [])
        position = min(index + 1, TSVECTOR_MAX_POSITION)
        if len(found) < TSVECTOR_MAX_POSITIONS and (not found or found[-1] != position):
            found.append(position)
    return " ".join(_pg_quoted(token) + ":" + ",".join(map(str, found))
                    for token, found in positions.items())


def _folded_positions(text: str) -> tuple[str, list[int]]:
    """`fold(text)` and, for each of its characters, the index in `text` it came from."""
    folded = fold(text)
    if len(folded) == len(text):  # the common case: every character folds to one
        return folded, list(range(len(text)))
    chars: list[str] = []
    origins: list[int] = []
    for index, char in enumerate(text):
        for piece in fold(char):
            chars.append(piece)
            origins.append(index)
    return "".join(chars), origins


def _surfaces(phrase: Phrase) -> list[tuple[bool, str]]:
    """What a phrase looks like in folded text: (word?, text) pieces, a CJK run rebuilt from
    its unigrams and bigrams (`退款 款 款单` is `退款单`)."""
    pieces: list[tuple[bool, str]] = []
    for token in phrase:
        last = pieces[-1] if pieces else (True, "")
        if token.word:
            pieces.append((True, token.text))
        elif not last[0] and len(token.text) == 1 and last[1].endswith(token.text):
            continue
        elif not last[0] and len(token.text) == 2 and last[1].endswith(token.text[0]):
            pieces[-1] = (False, last[1] + token.text[1])
        else:
            pieces.append((False, token.text))
    return pieces


def highlight(text: str, phrases: Sequence[Phrase], limit: int = 50) -> list[tuple[int, int]]:
    """Spans (start, end) of `text` that the query's pieces match, sorted and merged: a CJK
    run where it occurs, a word query as the whole word it starts."""
    folded, origins = _folded_positions(text)
    spans: list[tuple[int, int]] = []
    words = [match.span() for match in _RUNS.finditer(folded) if match.group(2)]
    for phrase in phrases:
        for word, piece in _surfaces(phrase):
            if word:
                spans.extend(span for span in words
                             if folded.startswith(piece, span[0]))
                continue
            start = folded.find(piece)
            while start >= 0 and len(spans) < limit * 4:
                spans.append((start, start + len(piece)))
                start = folded.find(piece, start + len(piece))
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        begin, finish = origins[start], origins[end - 1] + 1
        if merged and begin <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], finish))
        else:
            merged.append((begin, finish))
    return merged[:limit]
