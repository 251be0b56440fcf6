"""Config patterns on RE2: what `Pattern` and `PatternSet` answer; where RE2 differs from `re`."""

from __future__ import annotations

import pytest

from intake.patterns import Pattern, PatternInvalid, PatternSet, compile_pattern, utf8_prefix


def test_search_finds_the_pattern_anywhere_and_fullmatch_needs_all_of_the_text() -> None:
    pattern = Pattern("[0-9]{6}")
    assert pattern.search("order 123456 please")
    assert not pattern.fullmatch("order 123456 please")
    assert pattern.fullmatch("123456")
    assert not pattern.search("12345")


def test_search_reads_only_the_first_characters_and_dollar_holds_where_it_stops() -> None:
    assert not Pattern("needle").search("x" * 100 + "needle", 100)
    assert Pattern("needle").search("x" * 94 + "needle", 100)
    assert Pattern("x$").search("x" * 100 + "tail", 100)
    # Characters, not bytes: a cut never splits a character.
    assert Pattern("^订{3}$").search("订订订单", 3)


def test_dot_star_patterns_on_a_hostile_text_decide_correctly() -> None:
    hostile = ("refund " * 1500)[:10_000]
    assert not Pattern(".*refund.*order").search(hostile, 10_000)
    assert Pattern(".*refund.*order").search(hostile[:9_000] + " order", 10_000)
    assert not Pattern("(a+)+$").search("a" * 10_000 + "!")
    assert not Pattern("(x+x+)+y").fullmatch("x" * 5_000)


def test_a_pattern_set_names_every_pattern_found_in_order() -> None:
    patterns = PatternSet(["^about keyword1$", "(?i)refund", "k1", "^\\s*$", "(?P<x>quote)",
                           "(?P<x>price)"])
    assert patterns.which("REFUND k1") == [1, 2]
    assert patterns.which("about keyword1") == [0]
    assert patterns.which("price quote") == [4, 5]  # one group name twice: fine, no captures
    assert patterns.which("") == [3]
    assert patterns.which("xyz") == []
    assert patterns.any("xyz k1") and not patterns.any("xyz")


def test_flags_in_a_pattern_set_stay_with_their_pattern() -> None:
    patterns = PatternSet(["(?i)abc", "def"])
    assert patterns.any("ABC") and patterns.which("ABC") == [0]
    assert not patterns.any("DEF")


def test_lone_surrogates_in_a_text_are_read_not_raised() -> None:
    assert Pattern("a.b").search("a\ud800b")
    assert utf8_prefix("a\ud800b") == b"a?b"


def test_a_pattern_with_a_lone_surrogate_is_refused() -> None:
    with pytest.raises(PatternInvalid, match="lone surrogate"):
        Pattern("\ud800")
    with pytest.raises(PatternInvalid, match="lone surrogate"):
        compile_pattern("\ud800")


def test_the_encoded_text_is_reused_only_for_the_same_text_and_cut() -> None:
    text = "订单" * 10
    assert utf8_prefix(text, 3) == "订单订".encode()
    assert utf8_prefix(text) == text.encode()
    assert utf8_prefix(text, 3) == "订单订".encode()
    other = "".join(["订单"] * 10)  # equal, not the same object
    assert utf8_prefix(other, 1) == "订".encode()


# Where RE2 differs from Python's `re` (router/README.md, "Patterns"): pinned here so that a
# change in google-re2 shows up as a failing test, not as rules that quietly decide otherwise.
@pytest.mark.parametrize(("pattern", "text", "found"), [
    ("\\d", "１", False),  # full-width digit: `\d` is ASCII in RE2 (Python: Unicode)
    ("\\p{Nd}", "１", True),
    ("\\w", "订", False),  # `\w` is ASCII in RE2
    ("\\p{Han}", "订", True),
    ("\\b订\\b", "订", False),  # `\b` is between ASCII word characters and others
    ("\\bok\\b", "订ok订", True),
    ("\\s", "\u3000", False),  # ideographic space
    ("[\\s\\x{3000}]", "\u3000", True),
    ("(?i)é", "É", True),  # case folding is Unicode
    ("com$", "a.com\n", False),  # `$` is the end of the text only (Python: also before a \n)
    ("(?m)com$", "a.com\n", True),
    ("a{,3}", "a{,3}", True),  # no `{,n}` in RE2: literal text (Python: {0,3})
])
def test_re2_semantics_that_differ_from_python(pattern: str, text: str, found: bool) -> None:
    assert Pattern(pattern).search(text) is found


@pytest.mark.parametrize("pattern", ["订单", "订单|order", "refund my order", "a|b|c", "#1 x",
                                     "end\n"])
def test_plain_text_patterns_answer_as_re2_does(pattern: str) -> None:
    fast = Pattern(pattern)
    assert fast._literals is not None  # the substring path is the one under test
    slow = compile_pattern(pattern)
    for text in ["", "订单", "我的订单还没到", "ORDER", "an order", "x" * 20 + "order", "c",
                 "#1 x", "end\nnow", "refund my order!", "a|b"]:
        for cut in (None, 3, 20):
            read = text if cut is None else text[:cut]
            assert fast.search(text, cut) is (slow.search(read) is not None), (text, cut)
        assert fast.fullmatch(text) is (slow.fullmatch(text) is not None), text


@pytest.mark.parametrize("pattern", ["订单.", "a||b", "(?i)order", "x{2}", "a\\|b", "^a", "a$"])
def test_patterns_with_any_special_character_go_to_re2(pattern: str) -> None:
    assert Pattern(pattern)._literals is None
