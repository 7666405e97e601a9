"""Watch-query language → full-text expressions (FTS5 MATCH strings, PostgreSQL tsquery).

The search box speaks the same language as watch terms (``acme OR "acme cloud" -hiring``), so a
watch term pasted into search finds what the watch matched. Every phrase is emitted as a quoted
FTS5 string (``"`` doubled) and every PostgreSQL phrase is a bound parameter, so no user input
(``"``, ``*``, ``NEAR(``, ``-``, ``:``, ``^`` …) can ever reach the full-text syntax.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import reduce
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from listener.matching import parse_query

_WORDISH = re.compile(r"[^\W_]")
"""unicode61 indexes runs of letters/digits; a phrase without any (``*``, ``--``) can never match."""

PG_CONFIG = "simple"
"""Must equal the text-search config of the generated ``mention.search`` column (migration 0001)."""


@dataclass(frozen=True)
class SearchQuery:
    """A parsed search: any alternative matches if all its phrases appear, unless an exclusion does."""

    text: str
    alternatives: tuple[tuple[str, ...], ...]
    excluded: tuple[str, ...]


def parse_search(text: str) -> SearchQuery:
    """Parse with the watch-query parser; raise ValueError with a readable message if unusable.

    Apostrophes are literal in a search box (``don't``), so a query that fails only because of an
    unbalanced single quote is parsed again with them neutralised. NUL ends an FTS5 string (and
    PostgreSQL rejects it), so it becomes a space.
    """
    text = text.replace("\x00", " ")
    try:
        expr = parse_query(text)
    except ValueError as first:
        if "'" not in text:
            raise
        try:
            expr = parse_query(text.replace("'", "\u2019"))
        except ValueError:
            raise first from None
    alternatives = []
    for alt in expr.alternatives:
        phrases = tuple(p for p in alt.required if _WORDISH.search(p))
        if phrases:
            alternatives.append(phrases)
    if not alternatives:
        raise ValueError(f"search {text!r} has no word to look for (only punctuation or operators)")
    excluded = tuple(p for p in expr.excluded if _WORDISH.search(p))
    return SearchQuery(text=text, alternatives=tuple(alternatives), excluded=excluded)


def _quote(phrase: str) -> str:
    return '"' + phrase.replace('"', '""') + '"'


def fts5_match(query: SearchQuery) -> str:
    """``((“a” AND “b”) OR (“c d”)) NOT (“x” OR “y”)`` with every phrase quoted."""
    positive = " OR ".join("(" + " AND ".join(_quote(p) for p in alt) + ")" for alt in query.alternatives)
    if not query.excluded:
        return f"({positive})"
    negative = " OR ".join(_quote(p) for p in query.excluded)
    return f"({positive}) NOT ({negative})"


def _phrase(phrase: str) -> ColumnElement[object]:
    config: ColumnElement[Any] = sa.literal_column(f"'{PG_CONFIG}'::regconfig")
    return sa.func.phraseto_tsquery(config, sa.bindparam(None, phrase, type_=sa.Text))


def pg_tsquery(query: SearchQuery) -> ColumnElement[object]:
    """The same expression as a tsquery built from bound phrases with tsquery_and/or/not."""
    alts = [reduce(sa.func.tsquery_and, (_phrase(p) for p in alt)) for alt in query.alternatives]
    positive = reduce(sa.func.tsquery_or, alts)
    if not query.excluded:
        return positive
    negative = reduce(sa.func.tsquery_or, (_phrase(p) for p in query.excluded))
    return sa.func.tsquery_and(positive, sa.func.tsquery_not(negative))
