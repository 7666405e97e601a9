"""Label filters (mention_label), stats by bucket and group, threads, ranked search inside FTS5, migration 0002."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command

from enrich.base import Enrichment
from listener.types import Mention
from storage import Store, db, labels
from storage.stats import bucket_start
from tests.storage.conftest import T0, make_mention


def _enrich(store: Store, mention_id: str, stage: str, data: dict[str, object], version: str = "v1") -> None:
    store.save_enrichments([Enrichment(mention_id, stage, version, data)])


def _ids(store: Store, **kwargs: object) -> list[str]:
    return [i.id for i in store.search(limit=100, **kwargs).items]  # type: ignore[arg-type]


@pytest.mark.parametrize("rare_below", [0, 5000], ids=["walk-newest-first", "label-rows-first"])
def test_label_filters_follow_the_newest_result(store: Store, rare_below: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(labels, "RARE_LABEL", rare_below)
    ms = [make_mention(n) for n in range(4)]
    store.save_batch("hn", ms, None)
    _enrich(store, ms[0].id, "intent", {"label": "Complaint", "score": 0.9})
    _enrich(store, ms[1].id, "intent", {"label": "question"})
    _enrich(store, ms[0].id, "topics", {"topics": [{"name": "Battery"}, {"name": "pricing"}]})
    _enrich(store, ms[2].id, "topics", {"topics": [{"name": "pricing"}]})
    _enrich(store, ms[3].id, "language", {"lang": "de"})
    _enrich(store, ms[3].id, "journey", {"label": "onboarding"})
    _enrich(store, ms[1].id, "sentiment", {"label": "negative"})
    _enrich(store, ms[2].id, "duplicates", {"canonical": False, "group": "g"})
    _enrich(store, ms[0].id, "embedding", {"dim": 3})  # a stage without labels

    assert _ids(store, labels={"intent": "complaint"}) == [ms[0].id]
    assert _ids(store, labels={"intent": " COMPLAINT "}) == [ms[0].id]
    assert _ids(store, labels={"topic": "pricing"}) == [ms[2].id, ms[0].id]
    assert _ids(store, labels={"topic": "pricing", "intent": "complaint"}) == [ms[0].id]
    assert _ids(store, labels={"lang": "de", "stage": "onboarding"}) == [ms[3].id]
    assert _ids(store, labels={"sentiment": "negative", "intent": None}) == [ms[1].id]
    assert _ids(store, labels={"topic": "nothing"}) == []
    assert ms[2].id not in _ids(store, canonical_only=True) and len(_ids(store, canonical_only=True)) == 3
    assert store.count(labels={"topic": "pricing"}) == 2

    # A newer result replaces the labels of that stage only.
    _enrich(store, ms[0].id, "intent", {"label": "praise"}, version="v2")
    _enrich(store, ms[0].id, "topics", {"topics": []}, version="v2")
    assert _ids(store, labels={"intent": "complaint"}) == []
    assert _ids(store, labels={"intent": "praise"}) == [ms[0].id]
    assert _ids(store, labels={"topic": "pricing"}) == [ms[2].id]
    with pytest.raises(ValueError, match="unknown label filter"):
        store.search(labels={"colour": "red"})

    assert store.purge(source="hn") == 4
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM mention_label").scalar_one() == 0


def test_label_filter_pages_do_not_stop_early(sqlite_store: Store) -> None:
    """A rare label far back in time is found, and pages through in order (no post-filter scan limit)."""
    ms = [make_mention(n) for n in range(600)]
    sqlite_store.save_batch("hn", ms, None)
    rare = [ms[3], ms[7], ms[11]]
    sqlite_store.save_enrichments([Enrichment(m.id, "intent", "v1", {"label": "question"}) for m in rare])
    first = sqlite_store.search(labels={"intent": "question"}, limit=2)
    rest = sqlite_store.search(labels={"intent": "question"}, limit=2, after=first.next_after)
    assert [i.id for i in first.items + rest.items] == [ms[11].id, ms[7].id, ms[3].id]
    assert rest.next_after is None


def test_min_score_counts_missing_scores_as_zero(store: Store) -> None:
    ms = [make_mention(0, score=5.0), make_mention(1, score=None), make_mention(2, score=-1.0)]
    store.save_batch("hn", ms, None)
    assert _ids(store, min_score=1) == [ms[0].id]
    assert _ids(store, min_score=0) == [ms[1].id, ms[0].id]


def _random_store(store: Store, n: int = 300) -> list[Mention]:
    rng = random.Random(5)
    ms = []
    for i in range(n):
        source = rng.choice(["hn", "reddit", "forum"])
        ms.append(
            make_mention(
                i,
                source=source,
                kind="reddit" if source == "reddit" else "hackernews",
                created_at=T0 + timedelta(minutes=rng.randrange(0, 60 * 24 * 20)),
                matched=tuple(rng.sample(["acme", "globex"], rng.randint(0, 2))),
                extra={"deleted": True} if rng.random() < 0.05 else {},
            )
        )
    for source in ("hn", "reddit", "forum"):
        store.save_batch(source, [m for m in ms if m.source == source], None)
    labels = []
    for m in ms[::2]:
        labels.append(Enrichment(m.id, "sentiment", "v1", {"label": rng.choice(["negative", "positive"])}))
        names = rng.sample(["battery", "pricing", "support"], rng.randint(0, 2))
        labels.append(Enrichment(m.id, "topics", "v1", {"topics": [{"name": t} for t in names]}))
    store.save_enrichments(labels)
    return ms


def _expected(
    ms: list[Mention], labels: dict[str, list[str]], start: datetime, end: datetime, bucket: str, group: str
) -> tuple[int, dict[str, dict[str, int]]]:
    counts: Counter[tuple[str, str]] = Counter()
    total = 0
    for m in ms:
        if m.extra.get("deleted") or not start <= m.created_at < end:
            continue
        total += 1
        if group == "none":
            groups = ["all"]
        elif group == "source":
            groups = [m.source]
        elif group == "kind":
            groups = [m.kind]
        elif group == "watch":
            groups = list(m.matched) or ["(none)"]
        else:
            groups = labels.get(f"{group}:{m.id}") or ["unknown"]
        for g in groups:
            counts[(g, bucket_start(m.created_at, bucket).isoformat())] += 1
    series: dict[str, dict[str, int]] = {}
    for (g, key), n in sorted(counts.items()):
        series.setdefault(g, {})[key] = n
    return total, series


@pytest.mark.parametrize("bucket", ["hour", "day", "week"])
def test_volume_matches_counting_by_hand(store: Store, bucket: str) -> None:
    ms = _random_store(store)
    found = store.enrichments_for([m.id for m in ms])
    labels: dict[str, list[str]] = {}
    for mid, stages in found.items():
        if "sentiment" in stages:
            labels[f"sentiment:{mid}"] = [stages["sentiment"]["label"]]
        if stages.get("topics", {}).get("topics"):
            labels[f"topic:{mid}"] = [t["name"] for t in stages["topics"]["topics"]]
    start, end = T0 + timedelta(days=2, hours=5, minutes=7), T0 + timedelta(days=15, minutes=3)
    for group in ("none", "source", "kind", "watch", "sentiment", "topic"):
        got = store.volume(start, end, bucket=bucket, group_by=group)
        assert got == _expected(ms, labels, start, end, bucket, group), group
        assert sum(got[1].get("all", {}).values()) == (got[0] if group == "none" else 0)


def test_volume_narrows_and_validates(store: Store) -> None:
    ms = _random_store(store, 120)
    start, end = T0, T0 + timedelta(days=30)
    total, series = store.volume(start, end, group_by="source", sources=["reddit"], watches=["acme"])
    live = [m for m in ms if m.source == "reddit" and "acme" in m.matched and not m.extra.get("deleted")]
    assert total == len(live) == sum(series["reddit"].values()) and set(series) == {"reddit"}
    assert store.volume(T0 - timedelta(days=9), T0 - timedelta(days=1)) == (0, {})
    with pytest.raises(ValueError, match="bucket"):
        store.volume(start, end, bucket="month")
    with pytest.raises(ValueError, match="group_by"):
        store.volume(start, end, group_by="colour")


def test_volume_over_centuries_counts_only_where_mentions_are(store: Store) -> None:
    ms = [make_mention(n, created_at=T0 + timedelta(days=n)) for n in range(3)]
    store.save_batch("hn", ms, None)
    start, end = datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, tzinfo=UTC)
    for group in ("none", "source"):
        total, series = store.volume(start, end, bucket="day", group_by=group)  # ~3.6M days: must not walk them
        days = {bucket_start(m.created_at, "day").isoformat(): 1 for m in ms}
        assert total == 3 and list(series.values()) == [days]
    assert store.volume(start, end, bucket="week", sources=["nowhere"]) == (0, {})


def test_volume_by_source_without_source_state(sqlite_store: Store) -> None:
    sqlite_store.save_batch("hn", [make_mention(1), make_mention(2, created_at=T0 + timedelta(days=1))], None)
    with sqlite_store.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM source_state")
    day = bucket_start(T0, "day")
    total, series = sqlite_store.volume(T0, T0 + timedelta(days=2), group_by="source")
    assert total == 2 and series == {"hn": {day.isoformat(): 1, (day + timedelta(days=1)).isoformat(): 1}}


def test_thread_is_one_source_and_thread_oldest_first(store: Store) -> None:
    a = [make_mention(n, thread_id="t1", created_at=T0 + timedelta(days=30 - n)) for n in range(3)]
    other = [make_mention(10, thread_id="t2"), make_mention(11, source="reddit", kind="reddit", thread_id="t1")]
    gone = make_mention(12, thread_id="t1", extra={"deleted": True})
    store.save_batch("hn", [*a, other[0], gone], None)
    store.save_batch("reddit", other[1:], None)
    assert [i.id for i in store.thread("hn", "t1")] == [a[2].id, a[1].id, a[0].id]
    assert [i.id for i in store.thread("hn", "t1", limit=1)] == [a[2].id]
    assert store.thread("hn", "nope") == []


def _pages(store: Store, query: str, limit: int, **kwargs: object) -> list[str]:
    ids, after = [], None
    while True:
        page = store.search(query, sort="relevance", limit=limit, after=after, **kwargs)  # type: ignore[arg-type]
        ids += [i.id for i in page.items]
        after = page.next_after
        if after is None:
            return ids


def test_ranked_search_inside_fts_equals_the_join_plan(sqlite_store: Store) -> None:
    rng = random.Random(3)
    words = ["sync", "battery", "crash", "notes", "export"]
    ms = []
    for n in range(400):
        text = " ".join(rng.choices(words, k=rng.randint(1, 12)))
        deleted = {"deleted": True} if n % 9 == 0 else {}
        ms.append(make_mention(n, text=text, title=rng.choice([None, "sync help"]), extra=deleted))
    sqlite_store.save_batch("hn", ms, None)
    for query in ("sync", "battery OR crash", "notes -export"):
        fast = _pages(sqlite_store, query, 7)
        joined = _pages(sqlite_store, query, 7, since=T0 - timedelta(days=1))  # a filter: the join plan
        assert fast == joined and len(fast) == len(set(fast)) == sqlite_store.count(query)
        assert not {m.id for m in ms if m.extra} & set(fast)


def test_ranked_search_falls_back_when_deleted_rows_fill_the_top(sqlite_store: Store) -> None:
    ms = [make_mention(n, text="sync " * (20 - n), extra={"deleted": True} if n < 8 else {}) for n in range(12)]
    sqlite_store.save_batch("hn", ms, None)
    page = sqlite_store.search("sync", sort="relevance", limit=2)
    assert [i.id for i in page.items] == [ms[8].id, ms[9].id] and page.next_after


def test_migration_0002_backfills_labels_from_the_newest_results(tmp_path: Path) -> None:
    url = db.resolve_url(tmp_path / "old.db")
    engine = db.create_engine(url)
    with engine.connect().execution_options(sqlite_begin="IMMEDIATE") as conn, conn.begin():
        command.upgrade(db.alembic_config(conn), "0001")
    store = Store(engine, url)
    ms = [make_mention(n) for n in range(3)]
    store.save_batch("hn", ms, None)
    rows = [
        (ms[0].id, "intent", "v1", '{"label": "complaint"}', "2026-01-01 00:00:00.000000"),
        (ms[0].id, "intent", "v2", '{"label": "Praise"}', "2026-02-01 00:00:00.000000"),
        (ms[1].id, "topics", "v1", '{"topics": [{"name": "Pricing"}, {"name": "support"}]}', "2026-01-01"),
        (ms[1].id, "duplicates", "v1", '{"canonical": false}', "2026-01-01"),
        (ms[2].id, "language", "v1", '{"lang": "de"}', "2026-01-01"),
        (ms[2].id, "journey", "v1", '{"label": ""}', "2026-01-01"),
    ]
    with engine.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO enrichment VALUES (:m, :s, :v, :d, :c)"),
            [dict(zip("msvdc", r, strict=True)) for r in rows],
        )
    store.upgrade()
    assert store.schema_revision() == db.head_revision()
    assert _ids(store, labels={"intent": "praise"}) == [ms[0].id]
    assert _ids(store, labels={"intent": "complaint"}) == []
    assert _ids(store, labels={"topic": "pricing"}) == _ids(store, labels={"topic": "support"}) == [ms[1].id]
    assert _ids(store, labels={"lang": "de"}) == [ms[2].id]
    assert _ids(store, canonical_only=True) == [ms[2].id, ms[0].id]
    store.close()


@pytest.mark.postgres
def test_migration_0002_backfill_on_postgres(pg_url: str) -> None:
    engine = db.create_engine(db.resolve_url(pg_url))
    with engine.connect() as conn, conn.begin():
        command.upgrade(db.alembic_config(conn), "0001")
    store = Store(engine, db.resolve_url(pg_url))
    ms = [make_mention(n) for n in range(2)]
    store.save_batch("hn", ms, None)
    when = datetime(2026, 1, 1, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO enrichment VALUES (:m, :s, 'v1', CAST(:d AS jsonb), :c)"),
            [
                {"m": ms[0].id, "s": "topics", "d": '{"topics": [{"name": "Battery"}]}', "c": when},
                {"m": ms[0].id, "s": "sentiment", "d": '{"label": "negative"}', "c": when},
                {"m": ms[1].id, "s": "duplicates", "d": '{"canonical": false}', "c": when},
                {"m": ms[1].id, "s": "topics", "d": '{"topics": null}', "c": when},
            ],
        )
    store.upgrade()
    assert _ids(store, labels={"topic": "battery", "sentiment": "negative"}) == [ms[0].id]
    assert _ids(store, canonical_only=True) == [ms[0].id]
    store.close()


def test_volume_by_watch_counts_merged_and_repeated_watches(store: Store) -> None:
    """Grouping reads `mention.matched` (the watch rows' twin): merges on re-save, repeats and a watch filter."""
    day = T0.replace(hour=0, minute=0)
    first = [
        make_mention(0, matched=("acme",)),
        make_mention(1, matched=("acme", "acme")),  # a repeated name is one watch
        make_mention(2, matched=()),
        make_mention(3, matched=("globex",), extra={"deleted": True}),
        make_mention(4, matched=("globex", "acme"), created_at=T0 + timedelta(days=1)),
    ]
    store.save_batch("hn", first, None)
    store.save_batch("hn", [make_mention(0, matched=("globex",)), make_mention(2, matched=("initech",))], None)
    start, end = T0 - timedelta(days=1), T0 + timedelta(days=3)
    today, tomorrow = day.isoformat(), (day + timedelta(days=1)).isoformat()
    assert store.volume(start, end, group_by="watch") == (
        4,
        {"acme": {today: 2, tomorrow: 1}, "globex": {today: 1, tomorrow: 1}, "initech": {today: 1}},
    )
    assert store.volume(start, end, group_by="watch", watches=["globex"]) == (
        2,
        {"acme": {today: 1, tomorrow: 1}, "globex": {today: 1, tomorrow: 1}},
    )
    store.save_batch("hn", [make_mention(5, matched=())], None)
    total, series = store.volume(start, end, group_by="watch")
    assert total == 5 and series["(none)"] == {today: 1}
