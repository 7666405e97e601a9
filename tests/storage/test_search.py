"""search/count/mentions_between: full text, filters, sorting and keyset pagination."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from listener.types import Mention
from storage import Store
from tests.storage.conftest import BACKENDS, T0, make_mention

CORPUS = {
    1: ("Acme Cloud is down again", "alice", ("acme",), 5.0),
    2: ("acme support answered quickly, great café nearby", "bob", ("acme",), 50.0),
    3: ("Acme is hiring engineers, job offer inside", "carol", ("acme",), None),
    4: ("Globex cloud pricing is confusing", "alice", ("globex",), 12.0),
    5: ("Nothing to see, the cloud of acme-like words: acmeist", "dave", (), -3.0),
    6: ("Naïve résumé parsing in ACME CLOUD fails", "erin", ("acme",), 7.0),
}


@pytest.fixture(scope="module", params=BACKENDS)
def corpus(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """Read-only corpus shared by the module's tests (per backend): building it per test is the slow part."""
    if request.param == "postgres":
        target: str | Path = request.getfixturevalue("pg_cluster").new_database()
    else:
        target = tmp_path_factory.mktemp("corpus") / "listener.db"
    store = Store.open(target)
    mentions = [
        make_mention(n, title=None, text=text, author=author, matched=matched, score=score)
        for n, (text, author, matched, score) in CORPUS.items()
    ]
    mentions.append(make_mention(7, source="reddit", kind="reddit", text="acme on reddit", matched=("acme",)))
    store.save_batch("hn", mentions[:-1], None)
    store.save_batch("reddit", mentions[-1:], None)
    yield store
    store.close()


def numbers(items: list[Mention]) -> list[int]:
    return [int(m.native_id.split("-")[1]) for m in items]


def hits(store: Store, query: str | None, **kwargs: object) -> list[int]:
    return numbers([i.mention for i in store.search(query, limit=100, **kwargs).items])  # type: ignore[arg-type]


def test_words_phrases_or_and_exclusions(corpus: Store) -> None:
    assert hits(corpus, "acme") == [7, 6, 5, 3, 2, 1]  # newest first; "acme-like" tokenizes to acme
    assert hits(corpus, '"acme cloud"') == [6, 1]
    assert hits(corpus, "cloud acme") == [6, 5, 1]
    assert hits(corpus, "globex OR reddit") == [7, 4]
    assert hits(corpus, "acme -hiring -reddit") == [6, 5, 2, 1]
    assert hits(corpus, 'acme -"job offer"') == [7, 6, 5, 2, 1]
    assert hits(corpus, "ACME") == hits(corpus, "acme")
    assert hits(corpus, "acmeist") == [5]


def test_diacritics_are_folded_on_sqlite(corpus: Store) -> None:
    if corpus.dialect != "sqlite":
        pytest.skip("PostgreSQL 'simple' config keeps accents (no unaccent extension assumed)")
    assert hits(corpus, "cafe") == [2]
    assert hits(corpus, "naive resume") == [6]


def test_snippet_marks_hits(corpus: Store) -> None:
    page = corpus.search("quickly")
    assert page.items[0].snippet is not None and "[quickly]" in page.items[0].snippet
    assert corpus.search(None).items[0].snippet is None


@pytest.mark.parametrize(
    "query",
    ["acme NEAR(", "acme *", 'acme \\"', "title:acme", "acme ^x", "acme -", "ünï 日本語 acme", "acme\x00", "don't"],
)
def test_hostile_input_never_breaks_the_query(corpus: Store, query: str) -> None:
    corpus.search(query)
    corpus.count(query)


@pytest.mark.parametrize("query", ["-acme", "*", '"'])
def test_unsearchable_query_is_value_error(corpus: Store, query: str) -> None:
    with pytest.raises(ValueError):
        corpus.search(query)


def test_filters(corpus: Store) -> None:
    assert hits(corpus, None, sources=["reddit"]) == [7]
    assert hits(corpus, None, kinds=["reddit"]) == [7]
    assert hits(corpus, None, authors=["alice"]) == [4, 1]
    assert hits(corpus, None, watches=["globex"]) == [4]
    assert hits(corpus, "cloud", watches=["acme", "globex"]) == [6, 4, 1]
    assert hits(corpus, None, since=T0 + timedelta(minutes=2), until=T0 + timedelta(minutes=4)) == [3, 2]
    naive_since = (T0 + timedelta(minutes=6)).replace(tzinfo=None)  # naive = UTC
    assert hits(corpus, None, since=naive_since) == [7, 6]
    assert corpus.count("acme", sources=["hn"]) == 5
    assert corpus.count() == 7


def test_sorts(corpus: Store) -> None:
    assert hits(corpus, None, sort="engagement") == [2, 4, 6, 1, 5, 7, 3]  # no score sorts last, newest first
    relevant = hits(corpus, '"acme cloud" OR acme', sort="relevance")
    assert set(relevant) == {1, 2, 3, 5, 6, 7}
    assert hits(corpus, None, sort="relevance") == hits(corpus, None)  # nothing to rank: newest
    with pytest.raises(ValueError, match="unknown sort"):
        corpus.search(None, sort="random")
    with pytest.raises(ValueError, match="limit"):
        corpus.search(None, limit=0)


@pytest.mark.parametrize("sort", ["newest", "relevance", "engagement"])
def test_keyset_pages_cover_everything_once(corpus: Store, sort: str) -> None:
    query = "acme OR cloud"
    expected = hits(corpus, query, sort=sort)
    assert len(expected) == 7
    for limit in (1, 2, 3, 7):
        seen: list[int] = []
        after = None
        pages = 0
        while True:
            page = corpus.search(query, sort=sort, limit=limit, after=after)
            pages += 1
            seen += numbers([i.mention for i in page.items])
            assert 0 < len(page.items) <= limit
            if (after := page.next_after) is None:
                break
        assert seen == expected, limit
        assert pages == -(-len(expected) // limit)  # an exact last page carries no next token


def test_pagination_edges(corpus: Store) -> None:
    empty = corpus.search("nonexistentword")
    assert empty.items == [] and empty.next_after is None
    exact = corpus.search(None, limit=7)
    assert len(exact.items) == 7 and exact.next_after is None
    first = corpus.search(None, limit=3)
    assert first.next_after is not None
    # seq ties on created_at are broken by seq, so equal timestamps neither repeat nor vanish
    again = corpus.search(None, limit=3, after=first.next_after)
    assert {i.id for i in first.items}.isdisjoint({i.id for i in again.items})
    assert [i.seq for i in first.items] == sorted((i.seq for i in first.items), reverse=True)


def test_equal_sort_keys_paginate_by_seq(store: Store) -> None:
    same_time = [make_mention(n, created_at=T0) for n in range(5)]
    store.save_batch("hn", same_time, None)
    seen: list[str] = []
    after = None
    while True:
        page = store.search(None, limit=2, after=after)
        seen += [i.id for i in page.items]
        if (after := page.next_after) is None:
            break
    assert sorted(seen) == sorted(m.id for m in same_time) and len(seen) == 5


@pytest.mark.parametrize(
    "token",
    [
        "garbage!!",
        "",
        base64.urlsafe_b64encode(b"[1,2]").decode(),
        base64.urlsafe_b64encode(b'["newest","not a date",1]').decode(),
        base64.urlsafe_b64encode(b'["engagement",1.0,3]').decode(),  # token from another sort
        base64.urlsafe_b64encode(b'["newest","2026-01-01T00:00:00+00:00","x"]').decode(),
    ],
)
def test_invalid_page_cursor(corpus: Store, token: str) -> None:
    with pytest.raises(ValueError, match="invalid page cursor"):
        corpus.search(None, after=token)


def test_mentions_between(corpus: Store) -> None:
    window = corpus.mentions_between(T0 + timedelta(minutes=1), T0 + timedelta(minutes=5))
    assert numbers(window) == [1, 2, 3, 4]  # oldest first, until exclusive
    assert numbers(corpus.mentions_between(T0, T0 + timedelta(days=1), watches=["globex"])) == [4]
    assert numbers(corpus.mentions_between(T0, T0 + timedelta(days=1), limit=2)) == [1, 2]
