"""Enrichment bookkeeping: what still needs a stage, results per model version, history."""

from __future__ import annotations

from dataclasses import replace

from enrich.base import Enrichment
from storage import Store
from tests.storage.conftest import make_mention


def _fill(store: Store, n: int) -> list[str]:
    mentions = [make_mention(i) for i in range(n)]
    store.save_batch("hn", mentions, None)
    return [m.id for m in mentions]


def test_iter_unenriched_batches_in_insertion_order(store: Store) -> None:
    ids = _fill(store, 7)
    batches = list(store.iter_unenriched("sentiment", "v1", batch_size=3))
    assert [len(b) for b in batches] == [3, 3, 1]
    assert [m.id for b in batches for m in b] == ids
    assert store.count_unenriched("sentiment", "v1") == 7


def test_iter_unenriched_is_resumable(store: Store) -> None:
    ids = _fill(store, 10)
    done: list[str] = []
    for batch in store.iter_unenriched("sentiment", "v1", batch_size=4):
        store.save_enrichments([Enrichment(m.id, "sentiment", "v1", {"score": 0.5}) for m in batch])
        done += [m.id for m in batch]
        break  # the worker dies after its first batch
    assert store.count_unenriched("sentiment", "v1") == 6
    rest = [m.id for b in store.iter_unenriched("sentiment", "v1", batch_size=4) for m in b]
    assert done + rest == ids
    # saving while iterating neither skips nor repeats
    assert list(store.iter_unenriched("topics", "v1", batch_size=4))
    for batch in store.iter_unenriched("topics", "v1", batch_size=4):
        store.save_enrichments([Enrichment(m.id, "topics", "v1", {}) for m in batch])
    assert store.count_unenriched("topics", "v1") == 0
    assert list(store.iter_unenriched("topics", "v1")) == []


def test_other_stage_or_version_still_needs_work(store: Store) -> None:
    (mid,) = _fill(store, 1)
    store.save_enrichments([Enrichment(mid, "sentiment", "v1", {})])
    assert store.count_unenriched("sentiment", "v1") == 0
    assert store.count_unenriched("sentiment", "v2") == 1
    assert store.count_unenriched("language", "v1") == 1


def test_deleted_mentions_are_not_enriched(store: Store) -> None:
    m = make_mention(1)
    store.save_batch("hn", [m, make_mention(2)], None)
    store.save_batch("hn", [replace(m, extra={"deleted": True})], None)
    assert store.count_unenriched("sentiment", "v1") == 1


def test_history_across_model_versions(store: Store) -> None:
    a, b = _fill(store, 2)
    assert store.save_enrichments([Enrichment(a, "sentiment", "v1", {"label": "neg"})]) == 1
    assert store.save_enrichments([Enrichment(a, "sentiment", "v2", {"label": "pos"})]) == 1
    assert store.save_enrichments([Enrichment(a, "language", "v1", {"lang": "en"})]) == 1
    latest = store.enrichments_for([a, b])
    assert latest == {a: {"sentiment": {"label": "pos"}, "language": {"lang": "en"}}}
    assert store.enrichments_for([a], model_version="v1") == {
        a: {"sentiment": {"label": "neg"}, "language": {"lang": "en"}}
    }
    assert store.enrichments_for([a], stage="sentiment", model_version="v1") == {a: {"sentiment": {"label": "neg"}}}
    assert store.enrichments_for([a], stage="topics") == {}
    assert store.enrichments_for([]) == {}


def test_save_enrichments_upserts_and_skips_purged_mentions(store: Store) -> None:
    (mid,) = _fill(store, 1)
    store.save_enrichments([Enrichment(mid, "sentiment", "v1", {"label": "neg"})])
    written = store.save_enrichments(
        [Enrichment(mid, "sentiment", "v1", {"label": "pos"}), Enrichment("gone", "sentiment", "v1", {})]
    )
    assert written == 1
    assert store.enrichments_for([mid]) == {mid: {"sentiment": {"label": "pos"}}}
    assert store.save_enrichments([]) == 0
    assert store.check() == []


def test_enrichments_for_many_ids(store: Store) -> None:
    ids = _fill(store, 1200)  # more than one IN (...) chunk
    store.save_enrichments([Enrichment(i, "s", "v", {"n": n}) for n, i in enumerate(ids)])
    result = store.enrichments_for(ids, stage="s")
    assert len(result) == 1200 and result[ids[-1]] == {"s": {"n": 1199}}


def test_enriched_ids_matches_stage_and_version_exactly(store: Store) -> None:
    ids = _fill(store, 1200)  # more than one IN (...) chunk
    store.save_enrichments([Enrichment(i, "s", "v2", {}) for i in ids[::2]])
    store.save_enrichments([Enrichment(i, "s", "v1", {}) for i in ids[1::2]])
    store.save_enrichments([Enrichment(i, "t", "v2", {}) for i in ids[1::2]])
    assert store.enriched_ids(ids, "s", "v2") == set(ids[::2])
    assert store.enriched_ids(ids + ids[:3], "t", "v2") == set(ids[1::2])
    assert store.enriched_ids(ids, "s", "v3") == set() and store.enriched_ids([], "s", "v2") == set()


def test_count_unenriched_any_counts_each_mention_once_whatever_it_lacks(store: Store) -> None:
    ids = _fill(store, 10)
    pairs = [("s", "v1"), ("t", "v1")]
    assert store.count_unenriched_any(pairs) == 10 and store.count_unenriched_any([]) == 0
    store.save_enrichments([Enrichment(i, "s", "v1", {}) for i in ids[:6]])  # 4 lack both, 6 lack t
    assert store.count_unenriched_any(pairs) == 10
    store.save_enrichments([Enrichment(i, "t", "v1", {}) for i in ids[3:]])  # 0-2 lack t, 6-9 lack s
    assert store.count_unenriched_any(pairs) == 3 + 4
    store.purge(source="hn")
    assert store.count_unenriched_any(pairs) == 0
