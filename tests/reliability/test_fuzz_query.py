"""Property-based fuzzing of the query language: watch matching, search translation and Store.search.

Random query strings, heavy on FTS5 syntax (`"`, `*`, `^`, `:`, `NEAR(`, `AND`/`OR`/`NOT`, `-`, quotes,
NUL, unicode) never crash anything: the only failure allowed is a ValueError with a readable message.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from listener.matching import parse_query
from listener.types import Cursor, Mention
from storage import Store
from storage.fts import fts5_match, parse_search
from tests.reliability.fuzzing import BOUNDED

FTS_BITS = [
    '"',
    "'",
    "*",
    "^",
    ":",
    "(",
    ")",
    "NEAR(",
    "NEAR",
    "AND",
    "OR",
    "NOT",
    "-",
    "+",
    "{",
    "}",
    "\x00",
    "acme",
    "notes",
    "sync",
    "é",
    "日本",
    "\u2019",
    " ",
    " ",
    "col:",
    "title:",
    '-"',
    '""',
    "\\",
]
queries = st.lists(st.sampled_from(FTS_BITS) | st.text(max_size=6), max_size=12).map("".join) | st.text(max_size=40)


def _readable(exc: ValueError) -> None:
    message = str(exc)
    assert message and len(message) < 2000 and "Traceback" not in message


@BOUNDED
@given(queries, st.text(max_size=80))
def test_watch_query_parse_and_match(query: str, text: str) -> None:
    try:
        expr = parse_query(query)
    except ValueError as exc:
        _readable(exc)
        return
    assert isinstance(expr.matches(text), bool)
    assert all(isinstance(p, str) for p in expr.phrases)


@BOUNDED
@given(queries)
def test_search_translation(query: str) -> None:
    try:
        parsed = parse_search(query)
    except ValueError as exc:
        _readable(exc)
        return
    match = fts5_match(parsed)
    assert "\x00" not in match
    # every phrase is quoted: after removing quoted strings no user text is left but the operators
    bare = match
    for alt in parsed.alternatives:
        for phrase in alt:
            bare = bare.replace('"' + phrase.replace('"', '""') + '"', "")
    for phrase in parsed.excluded:
        bare = bare.replace('"' + phrase.replace('"', '""') + '"', "")
    assert set(bare.replace("AND", "").replace("OR", "").replace("NOT", "")) <= set("() ")


@pytest.fixture(scope="module")
def search_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    store = Store.open(Path(tmp_path_factory.mktemp("fuzzq")) / "q.db")
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    texts = [
        'Acme Notes sync is broken "again"',
        "NEAR(acme notes) * ^ : col:value",
        "don't panic — dark mode",
        "日本語 テキスト acme",
        "plain text with OR and AND and NOT",
    ]
    mentions = [
        Mention(
            source="s",
            kind="rss",
            native_id=str(i),
            url=None,
            title=f"t{i}",
            text=text,
            author=f"a{i}",
            created_at=t0 + timedelta(minutes=i),
        )
        for i, text in enumerate(texts)
    ]
    store.save_batch("s", mentions, Cursor())
    yield store
    store.close()


@BOUNDED
@given(queries, st.sampled_from(["newest", "relevance", "engagement"]))
def test_store_search_never_crashes(search_store: Store, query: str, sort: str) -> None:
    try:
        page = search_store.search(query, sort=sort, limit=10)
        count = search_store.count(query)
    except ValueError as exc:
        _readable(exc)
        return
    assert len(page.items) <= count <= 5
