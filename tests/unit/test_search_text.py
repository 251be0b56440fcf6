"""The search tokenizer: folding, tokens, query phrases, the literals written for each backend."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from intake.search_text import (
    MAX_QUERY_CHARS,
    QueryTooLong,
    _tokens,  # the query side's token list
    fold,
    fts5_match,
    highlight,
    index_tokens,
    parse_query,
    tsquery,
    tsvector,
)


def texts(q: str) -> list[list[str]]:
    return [[token.text for token in phrase] for phrase in parse_query(q)]


def test_folding_is_nfkc_simplified_and_lower_case() -> None:
    assert fold("ＳＦ１２３") == "sf123"
    assert fold("退貨 發票 會員") == "退货 发票 会员"
    assert fold("Refund") == "refund"


def test_cjk_runs_are_interleaved_unigrams_and_bigrams() -> None:
    assert index_tokens("我要退款，订单") == ["我", "我要", "要", "要退", "退", "退款", "款",
                                            "订", "订单", "单"]
    assert index_tokens("退") == ["退"]
    assert index_tokens("カタ 한국") == ["カ", "カタ", "タ", "한", "한국", "국"]


def test_latin_and_digit_runs_are_words_and_punctuation_separates() -> None:
    assert index_tokens("Order SF123, 20261206-0001 a_b ñandú") == [
        "order", "sf123", "20261206", "0001", "a", "b", "ñandú"]
    assert index_tokens("订单SF123已签收")[:4] == ["订", "订单", "单", "sf123"]


def test_a_substring_of_a_run_is_a_phrase_of_consecutive_index_tokens() -> None:
    stream = index_tokens("我要退款单号")
    for start in range(6):
        for end in range(start + 1, 7):
            [phrase] = texts("我要退款单号"[start:end])
            assert any(stream[i:i + len(phrase)] == phrase for i in range(len(stream))), phrase


def test_query_parts_quotes_and_words() -> None:
    assert texts("退款") == [["退款"]]
    assert texts("退款单") == [["退款", "款", "款单"]]
    assert texts("退款 发票") == [["退款"], ["发票"]]
    assert texts('"refund request" sf12') == [["refund", "request"], ["sf12"]]
    assert texts('a "b') == [["a"], ["b"]]  # an unmatched quote is ignored
    assert texts("退款 退款") == [["退款"]]
    assert [t.word for t in parse_query("sf12 退")[0] + parse_query("sf12 退")[1]] == [
        True, False]


@pytest.mark.parametrize("q", ["*", '"', "&|!:", "()", "''", "\\", "\x00", "<->"])
def test_operators_alone_are_no_query(q: str) -> None:
    assert parse_query(q) == []


def test_the_backends_literals_quote_every_token() -> None:
    phrases = parse_query('退款 "refund request" sf12')
    assert tsquery(phrases) == "('退款') & ('refund':* <-> 'request':*) & ('sf12':*)"
    assert fts5_match(phrases) == '"退款" AND "refund"* + "request"* AND "sf12"*'
    assert tsvector(["退", "退款", "款", "退"]) == "'退':1,4 '退款':2 '款':3"


def test_too_long_queries_are_refused() -> None:
    with pytest.raises(QueryTooLong):
        parse_query("x" * (MAX_QUERY_CHARS + 1))
    with pytest.raises(QueryTooLong):
        parse_query(" ".join(str(i) for i in range(201)))


def test_highlight_marks_the_original_characters() -> None:
    content = "#1001 退貨 ＳＦ１２３４ refunded\n我要退款"
    spans = highlight(content, parse_query("退货 sf12 退款"))
    assert [content[a:b] for a, b in spans] == ["退貨", "ＳＦ１２３４", "退款"]


@given(st.text(max_size=200))
def test_any_text_tokenizes_and_any_query_writes_safe_literals(value: str) -> None:
    tokens = index_tokens(value)
    # The index's fast path and the query's tokens are one tokenizer.
    assert tokens == [token.text for token in _tokens(fold(value))]
    assert all(token and " " not in token and '"' not in token and "'" not in token
               for token in tokens)
    try:
        phrases = parse_query(value)
    except QueryTooLong:
        return
    for phrase in phrases:
        for token in phrase:
            assert token.text and all(c.isalnum() or not c.isascii() for c in token.text)
    tsquery(phrases)
    fts5_match(phrases)
