from __future__ import annotations

import pytest

from listener.errors import ConfigError
from listener.matching import WatchQuery, match_watches, parse_query


@pytest.mark.parametrize(
    ("query", "text", "expected"),
    [
        ("acme", "I love ACME!", True),
        ("acme", "the acmeist movement", False),  # word boundary
        ('"acme notes"', "Acme   Notes sync is broken", True),  # phrase, whitespace-flexible
        ('"acme notes"', "acme wrote notes", False),
        ("acme sync", "sync in Acme is slow", True),  # AND, any order
        ("acme sync", "acme is slow", False),
        ("acme OR notably", "switched to Notably", True),
        ("acme -hiring", "Acme is hiring engineers", False),
        ('acme -"job offer"', "acme sent a job offer", False),
        ('acme -"job offer"', "acme offer for a job", True),
        ("c++", "writing C++ daily", True),
        (".net", "we use .NET here", True),
        ("café", "Le CAFÉ est bon", True),
    ],
)
def test_query_language(query: str, text: str, expected: bool) -> None:
    assert parse_query(query).matches(text) is expected


@pytest.mark.parametrize("bad", ["-acme", "acme OR", '"unclosed', "OR"])
def test_bad_queries_raise_readable_errors(bad: str) -> None:
    with pytest.raises(ValueError, match=r"query|parse"):
        parse_query(bad)


def test_watch_query_phrases_and_matching() -> None:
    w = WatchQuery.build("acme", ['"acme notes" OR acmenotes -hiring', "acme app"])
    assert w.phrases == ("acme notes", "acmenotes", "acme", "app")
    assert w.matches("AcmeNotes crashed again")
    assert not w.matches("acmenotes is hiring")
    other = WatchQuery.build("rival", ["notably"], competitor=True)
    assert match_watches("acme app vs Notably", [w, other]) == ("acme", "rival")


def test_bad_term_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"watch\.acme\.terms\[1\]"):
        WatchQuery.build("acme", ["ok", "-only"], path="x.toml")
