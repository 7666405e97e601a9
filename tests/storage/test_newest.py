"""Newest-first text search from FTS5's rowid order (storage/newest.py) must page exactly like one plain
statement that sorts every match by time, however far insertion order strays from time order."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from listener.types import Mention
from storage import Store, newest
from storage.fts import fts5_match, parse_search
from tests.storage.conftest import T0, make_mention

WORDS = ["sync", "battery", "crash", "notes", "export", "login", "offline", "mode"]


@pytest.fixture
def taken(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Small candidate sets so a 700-mention store needs retries and widening; yields each outcome."""
    monkeypatch.setattr(newest, "FEW_MATCHES", 0)
    monkeypatch.setattr(newest, "FIRST_CANDIDATES", 8)
    monkeypatch.setattr(newest, "MAX_CANDIDATES", 512)
    outcomes: list[str] = []
    real = newest.newest_by_rowid

    def spy(*args: Any, **kwargs: Any) -> Any:
        keys = real(*args, **kwargs)
        outcomes.append("fallback" if keys is None else "rowid")
        return keys

    monkeypatch.setattr(newest, "newest_by_rowid", spy)
    yield outcomes


def _store(store: Store) -> list[Mention]:
    """Three sources fetched at different rhythms (a daily one brings a day of older reviews at once),
    late backfill of old posts, a few future-dated posts (bad source clocks), every 13th deleted, and
    runs of equal timestamps."""
    rng = random.Random(11)
    batches: list[tuple[str, list[Mention]]] = []
    n = 0
    for hour in range(0, 240, 4):
        fresh = []
        for _ in range(8):
            n += 1
            at = T0 + timedelta(hours=hour, minutes=rng.choice([0, 0, 7, 30]))
            if n % 97 == 0:
                at += timedelta(days=30)  # future-dated
            fresh.append(make_mention(n, source="hn", text=" ".join(rng.choices(WORDS, k=rng.randint(1, 6))),
                                      created_at=at, extra={"deleted": True} if n % 13 == 0 else {}))  # fmt: skip
        batches.append(("hn", fresh))
        if hour % 24 == 20:  # the daily source: a day of reviews, oldest first
            day = []
            for _ in range(12):
                n += 1
                at = T0 + timedelta(hours=hour - rng.randrange(0, 24), minutes=rng.randrange(60))
                day.append(make_mention(n, source="appstore", text=" ".join(rng.choices(WORDS, k=3)), created_at=at))
            batches.append(("appstore", sorted(day, key=lambda m: m.created_at)))
    backfill = [make_mention(n + i, source="forum", text=" ".join(rng.choices(WORDS, k=4)),
                             created_at=T0 + timedelta(hours=rng.randrange(0, 240))) for i in range(1, 40)]  # fmt: skip
    batches.append(("forum", backfill))
    ms: list[Mention] = []
    for source, part in batches:
        store.save_batch(source, part, None)
        ms += part
    return ms


def _reference(store: Store, query: str, **filters: Any) -> list[str]:
    sql = (
        "SELECT m.id FROM mention m JOIN mention_fts ON mention_fts.rowid = m.seq WHERE mention_fts MATCH ?"
        " AND m.deleted = 0" + (" AND m.source = ?" if "source" in filters else "") +
        " ORDER BY m.created_at DESC, m.seq DESC"
    )  # fmt: skip
    params = (fts5_match(parse_search(query)), *([filters["source"]] if "source" in filters else []))
    with store.engine.connect() as conn:
        return list(conn.exec_driver_sql(sql, params).scalars())


def _pages(store: Store, query: str, limit: int, **filters: Any) -> list[str]:
    ids: list[str] = []
    after = None
    sources = [filters["source"]] if "source" in filters else ()
    while True:
        page = store.search(query, sort="newest", limit=limit, after=after, sources=sources)
        ids += [i.id for i in page.items]
        after = page.next_after
        if after is None:
            return ids


@pytest.mark.parametrize("query", ["sync", "sync OR crash", '"offline mode"', "notes -export", "battery login"])
def test_pages_match_sorting_every_match_by_time(sqlite_store: Store, taken: list[str], query: str) -> None:
    _store(sqlite_store)
    for filters in ({}, {"source": "appstore"}, {"source": "forum"}):
        expected = _reference(sqlite_store, query, **filters)
        for limit in (1, 5, 30, 200):
            assert _pages(sqlite_store, query, limit, **filters) == expected, (filters, limit)
    assert "rowid" in taken  # the rowid plan answered pages (the rest fell back to the time index)


def test_out_of_order_mentions_widen_the_candidates_instead_of_being_missed(
    sqlite_store: Store, taken: list[str]
) -> None:
    """The newest mention by time was inserted first: the first candidates (newest rowids) miss it, and the
    time-index check must pull it in."""
    first = make_mention(1, source="hn", text="sync early insert", created_at=T0 + timedelta(days=5))
    sqlite_store.save_batch("hn", [first], None)
    later = [make_mention(n, source="hn", text="sync later", created_at=T0 + timedelta(minutes=n)) for n in range(2, 80)]
    sqlite_store.save_batch("hn", later, None)
    page = sqlite_store.search("sync", sort="newest", limit=3)
    assert page.items[0].id == first.id and taken == ["rowid"]
    assert _pages(sqlite_store, "sync", 7) == _reference(sqlite_store, "sync")


def test_too_far_out_of_order_falls_back_to_the_time_index(
    sqlite_store: Store, taken: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(newest, "MAX_SPAN", 10)
    _store(sqlite_store)
    assert _pages(sqlite_store, "sync", 5) == _reference(sqlite_store, "sync")
    assert "fallback" in taken


def test_later_pages_take_the_rowid_plan_too_and_widen_for_backfill(
    sqlite_store: Store, taken: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exports walk every page: later pages must not fall back each time. Backfilled mentions (stored last,
    high seqs, old times) sit above each cursor's seq, so proving those pages needs the upward widening."""
    widened: list[bool] = []
    real = newest._page

    def spy(conn: Any, within: Any, rest: Any, limit: int) -> Any:
        widened.append(any(">=" in str(w) for w in within))  # only the widened span has a lower bound
        return real(conn, within, rest, limit)

    monkeypatch.setattr(newest, "_page", spy)
    _store(sqlite_store)
    assert _pages(sqlite_store, "sync", 5) == _reference(sqlite_store, "sync")
    assert taken.count("rowid") >= 0.8 * len(taken) and any(widened)
