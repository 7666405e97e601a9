"""Query translation: watch-query language → FTS5 MATCH strings, without touching a database."""

from __future__ import annotations

import sqlite3

import pytest

from storage.fts import fts5_match, parse_search


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("acme", '(("acme"))'),
        ("acme cloud", '(("acme" AND "cloud"))'),
        ('"acme cloud"', '(("acme cloud"))'),
        ("acme OR globex", '(("acme") OR ("globex"))'),
        ("acme -hiring", '(("acme")) NOT ("hiring")'),
        ('acme -hiring -"job offer"', '(("acme")) NOT ("hiring" OR "job offer")'),
        ("acme NEAR( b*", '(("acme" AND "NEAR(" AND "b*"))'),
        ("acme *", '(("acme"))'),  # a token without letters or digits can never match: dropped
        ('say \\"hi', '(("say" AND """hi"))'),  # a literal quote is doubled inside the FTS string
    ],
)
def test_translation(query: str, expected: str) -> None:
    assert fts5_match(parse_search(query)) == expected


@pytest.mark.parametrize("query", ["-hiring", '-"job offer" -x', "*", "-", "--", "( ) ^", "OR", ""])
def test_nothing_to_search_is_a_value_error(query: str) -> None:
    with pytest.raises(ValueError, match=r"query|search"):
        parse_search(query)


@pytest.mark.parametrize("query", ['acme "cloud', 'a"b', '"'])
def test_unbalanced_double_quote_is_a_readable_value_error(query: str) -> None:
    with pytest.raises(ValueError, match="cannot parse query"):
        parse_search(query)


def test_apostrophes_are_literal() -> None:
    assert parse_search("don't stop").alternatives == (("don\u2019t", "stop"),)
    assert parse_search("'acme cloud'").alternatives == (("acme cloud",),)  # balanced: still a phrase


@pytest.mark.parametrize(
    "query",
    ["a:b", "title:acme", "a^b", "{a b}", "a AND", "NOT a", "a + b", "ünïcödé 日本語", "x\x00y", "a)b(c"],
)
def test_hostile_input_is_valid_fts5(query: str) -> None:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE VIRTUAL TABLE f USING fts5(title, text, author, tokenize='unicode61 remove_diacritics 2')")
    db.execute("SELECT * FROM f WHERE f MATCH ?", (fts5_match(parse_search(query)),)).fetchall()
