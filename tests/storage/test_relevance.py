"""Relevance on SQLite: the FTS-first plan (rank in FTS5, filter a window) and the rowid span of a time
window must page exactly like one plain query that ranks every match and filters it by hand."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest

from enrich.base import Enrichment
from listener.types import Mention
from storage import Store, relevance
from storage.fts import fts5_match, parse_search
from tests.storage.conftest import T0, make_mention

WORDS = ["sync", "battery", "crash", "notes", "export", "login"]


@pytest.fixture
def fast(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bool]]:
    """FTS-first even on a small store; yields, per relevance query, whether it answered (not the join)."""
    monkeypatch.setattr(relevance, "RANKED_FIRST_ABOVE", 0)
    monkeypatch.setattr(relevance, "RANKED_SAMPLE", 50)
    monkeypatch.setattr(relevance, "RANKED_WINDOW_SHARE", 1)
    monkeypatch.setattr(relevance, "RANKED_COLUMN_SHARE", 0.0)
    monkeypatch.setattr(relevance, "RANKED_DENSE_SHARE", 1.0)
    answered: list[bool] = []
    real = relevance.ranked_in_fts

    def spy(*args: Any, **kwargs: Any) -> Any:
        keys = real(*args, **kwargs)
        answered.append(keys is not None)
        return keys

    monkeypatch.setattr(relevance, "ranked_in_fts", spy)
    yield answered


@pytest.fixture
def in_set(fast: list[bool], monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Column filters never go FTS-first, so indexed ones take the filtered-set plan; yields its row counts."""
    monkeypatch.setattr(relevance, "RANKED_COLUMN_SHARE", 2.0)
    used: list[int] = []
    real = relevance._in_set

    def spy(*args: Any, **kwargs: Any) -> Any:
        keys = real(*args, **kwargs)
        used.append(len(keys))
        return keys

    monkeypatch.setattr(relevance, "_in_set", spy)
    yield used


def _store(store: Store, n: int = 600) -> tuple[list[Mention], dict[str, str]]:
    """Mixed sources and lengths; `forum` posts are long, so they rank low for any word; late backfill of
    old posts (high seq, old time); every 11th deleted; sentiment on every other one."""
    rng = random.Random(5)
    ms = []
    for i in range(n):
        source = "forum" if i % 10 == 0 else rng.choice(["hn", "reddit"])
        size = rng.randint(40, 60) if source == "forum" else rng.randint(1, 10)
        backfilled = i >= n - 60
        ms.append(
            make_mention(
                i,
                source=source,
                text=" ".join(rng.choices(WORDS, k=size)),
                title=rng.choice([None, "sync help", "crash report"]),
                created_at=T0 + timedelta(minutes=rng.randrange(0, 600) if backfilled else 10 * i),
                extra={"deleted": True} if i % 11 == 0 else {},
            )
        )
    for source in ("hn", "reddit", "forum"):
        part = [m for m in ms if m.source == source]
        store.save_batch(source, part[: len(part) - 20], None)
    for source in ("hn", "reddit", "forum"):  # the backfill: saved last, so highest seqs
        part = [m for m in ms if m.source == source]
        store.save_batch(source, part[len(part) - 20 :], None)
    sentiment = {m.id: rng.choice(["negative", "positive"]) for m in ms[::2]}
    store.save_enrichments([Enrichment(mid, "sentiment", "v1", {"label": s}) for mid, s in sentiment.items()])
    return ms, sentiment


def _reference(store: Store, query: str, keep: Callable[[Mention], bool], ms: list[Mention]) -> list[str]:
    """Every match ranked by one plain statement (bm25, then newest seq), filtered here."""
    with store.engine.connect() as conn:
        ranked = conn.exec_driver_sql(
            "SELECT m.id FROM mention m JOIN mention_fts ON mention_fts.rowid = m.seq WHERE mention_fts MATCH ?"
            " ORDER BY bm25(mention_fts, 2.0, 1.0, 0.5), m.seq DESC",
            (fts5_match(parse_search(query)),),
        ).scalars()
        by_id = {m.id: m for m in ms}
        return [mid for mid in ranked if not by_id[mid].extra.get("deleted") and keep(by_id[mid])]


def _pages(store: Store, query: str, limit: int, **kwargs: Any) -> list[str]:
    ids: list[str] = []
    after = None
    while True:
        page = store.search(query, sort="relevance", limit=limit, after=after, **kwargs)
        assert len(page.items) <= limit and (page.next_after is None or len(page.items) == limit)
        ids += [i.id for i in page.items]
        after = page.next_after
        if after is None:
            return ids


_LATE, _MID, _EARLY = T0 + timedelta(hours=80), T0 + timedelta(hours=30), T0 + timedelta(hours=3)
CASES: list[tuple[str, dict[str, Any], Callable[[Mention, dict[str, str]], bool]]] = [
    ("most pass", {"sources": ["hn", "reddit"]}, lambda m, s: m.source in ("hn", "reddit")),
    ("low-ranked source", {"sources": ["forum"]}, lambda m, s: m.source == "forum"),
    ("label", {"labels": {"sentiment": "negative"}}, lambda m, s: s.get(m.id) == "negative"),
    ("time window", {"since": _MID, "until": _MID + timedelta(hours=30)},
     lambda m, s: _MID <= m.created_at < _MID + timedelta(hours=30)),
    ("window + source", {"sources": ["reddit"], "since": _LATE},
     lambda m, s: m.source == "reddit" and m.created_at >= _LATE),
    ("early window with backfill", {"until": _EARLY}, lambda m, s: m.created_at < _EARLY),
    ("nothing passes", {"sources": ["mastodon"]}, lambda m, s: False),
    ("empty window", {"since": T0 - timedelta(days=9), "until": T0 - timedelta(days=8)}, lambda m, s: False),
]  # fmt: skip


@pytest.mark.parametrize("query", ["sync", "battery OR crash", "notes -export", "login sync"])
def test_fts_first_pages_like_ranking_every_match(sqlite_store: Store, fast: list[bool], query: str) -> None:
    ms, sentiment = _store(sqlite_store)
    for name, filters, keep in CASES:
        expected = _reference(sqlite_store, query, lambda m: keep(m, sentiment), ms)  # noqa: B023
        for limit in (1, 4, 50):
            assert _pages(sqlite_store, query, limit, **filters) == expected, (name, limit)
        assert len(expected) == sqlite_store.count(query, **filters), name
    assert any(fast) and not all(fast)  # both FTS-first pages and join fallbacks were compared


@pytest.mark.parametrize("query", ["sync", "battery OR crash"])
def test_filtered_set_pages_like_ranking_every_match(sqlite_store: Store, in_set: list[int], query: str) -> None:
    ms, sentiment = _store(sqlite_store)
    for name, filters, keep in CASES:
        expected = _reference(sqlite_store, query, lambda m: keep(m, sentiment), ms)  # noqa: B023
        for limit in (1, 4, 50):
            assert _pages(sqlite_store, query, limit, **filters) == expected, (name, limit)
    assert len(in_set) > 20 and any(in_set)


def test_fts_first_answers_and_widens_before_giving_up(sqlite_store: Store, fast: list[bool]) -> None:
    """Pages come from FTS-first (not the join fallback) whenever the filters leave enough candidates,
    including a source whose posts all rank low, which needs a second, wider window."""
    _store(sqlite_store)
    for filters in ({"sources": ["hn", "reddit"]}, {"sources": ["forum"]}, {"labels": {"sentiment": "negative"}}):
        fast.clear()
        sqlite_store.search("sync", sort="relevance", limit=5, **filters)  # type: ignore[arg-type]
        assert fast == [True], filters


def test_few_matches_and_ties(sqlite_store: Store, fast: list[bool]) -> None:
    same = [make_mention(n, text="identical words here", source="hn") for n in range(6)]
    other = [make_mention(n, text="nothing to see", source="hn") for n in range(6, 40)]
    sqlite_store.save_batch("hn", same + other, None)
    ids = _pages(sqlite_store, "identical", 4, sources=["hn"])
    assert ids == [m.id for m in reversed(same)]  # equal bm25: newest seq first, across page boundaries
    assert _pages(sqlite_store, "identical", 50, sources=["reddit"]) == []


def test_join_plan_agrees_without_the_fast_paths(sqlite_store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    _store(sqlite_store)
    cases = [({"sources": ["reddit"], "since": T0 + timedelta(hours=20)}), {"labels": {"sentiment": "positive"}}]
    monkeypatch.setattr(relevance, "RANKED_FIRST_ABOVE", 0)
    fast = [_pages(sqlite_store, "sync OR crash", 3, **c) for c in cases]
    monkeypatch.setattr(relevance, "RANKED_FIRST_ABOVE", 10**9)
    monkeypatch.setattr(relevance, "SEQ_SPAN_ROWS", -1)
    assert fast == [_pages(sqlite_store, "sync OR crash", 3, **c) for c in cases]


def _newest_reference(store: Store, query: str, newest: int, keep: Callable[[Mention], bool], ms: list[Mention]) -> list[str]:
    """The plain ranking restricted to the `newest` newest matches (by rowid), filtered here."""
    with store.engine.connect() as conn:
        match = fts5_match(parse_search(query))
        rowids = conn.exec_driver_sql(
            "SELECT rowid FROM mention_fts WHERE mention_fts MATCH ? ORDER BY rowid DESC", (match,)
        ).scalars().all()
        horizon = rowids[newest - 1] if len(rowids) > newest else 0
        ranked = conn.exec_driver_sql(
            "SELECT m.id FROM mention m JOIN mention_fts ON mention_fts.rowid = m.seq WHERE mention_fts MATCH ?"
            " AND m.seq >= ? ORDER BY bm25(mention_fts, 2.0, 1.0, 0.5), m.seq DESC",
            (match, horizon),
        ).scalars()
        by_id = {m.id: m for m in ms}
        return [mid for mid in ranked if not by_id[mid].extra.get("deleted") and keep(by_id[mid])]


@pytest.mark.parametrize("plans", ["default", "fast"])
def test_common_query_ranks_only_the_newest_matches_and_says_so(
    sqlite_store: Store, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest, plans: str
) -> None:
    if plans == "fast":
        request.getfixturevalue("fast")
    monkeypatch.setattr(relevance, "RANKED_NEWEST", 40)
    ms, sentiment = _store(sqlite_store)
    for name, filters, keep in CASES[:3]:
        expected = _newest_reference(sqlite_store, "sync", 40, lambda m: keep(m, sentiment), ms)  # noqa: B023
        assert 0 < len(expected) <= 40
        for limit in (1, 7, 50):
            assert _pages(sqlite_store, "sync", limit, **filters) == expected, (name, limit)
    page = sqlite_store.search("sync", sort="relevance", limit=5)
    assert page.ranked_newest == 40
    rare = sqlite_store.search("identical", sort="relevance", limit=5)
    assert rare.ranked_newest is None and sqlite_store.search("sync", sort="newest", limit=5).ranked_newest is None


def test_later_pages_keep_the_horizon_of_the_first(sqlite_store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """The token pins the horizon: new matches arriving between pages (which move "the newest N") must
    not drop older ones from later pages. Shrinking RANKED_NEWEST after page 1 stands in for that move."""
    monkeypatch.setattr(relevance, "RANKED_NEWEST", 30)
    ms, _ = _store(sqlite_store)
    expected = _newest_reference(sqlite_store, "sync", 30, lambda m: True, ms)
    first = sqlite_store.search("sync", sort="relevance", limit=5)
    monkeypatch.setattr(relevance, "RANKED_NEWEST", 10)
    ids, after = [i.id for i in first.items], first.next_after
    while after is not None:
        page = sqlite_store.search("sync", sort="relevance", limit=5, after=after)
        assert page.ranked_newest
        ids += [i.id for i in page.items]
        after = page.next_after
    assert ids == expected


@pytest.mark.parametrize("fields", [["newest", "2026-01-01T00:00:00+00:00", 5, 3], ["relevance", -1.0, 5, "x"],
                                    ["relevance", -1.0, 5, 3, 4], ["relevance", -1.0, 5, True]])  # fmt: skip
def test_page_tokens_with_a_bad_horizon_are_refused(sqlite_store: Store, fields: list[Any]) -> None:
    import base64
    import json

    _store(sqlite_store, 50)
    sort = str(fields[0])
    token = base64.urlsafe_b64encode(json.dumps(fields).encode()).decode().rstrip("=")
    with pytest.raises(ValueError, match="invalid page cursor"):
        sqlite_store.search("sync", sort=sort, limit=5, after=token)
