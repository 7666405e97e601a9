"""Emerging topics: clustering, c-TF-IDF labels, central quotes and identities that survive re-runs."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import numpy as np

from enrich.emerging import (
    build_clusters,
    cluster_vectors,
    ctfidf_keywords,
    emerging_topics,
    load_state,
    state_path_for,
)
from enrich.topics import TopicStage
from enrich.vectors import EmbeddingStage
from listener.types import Mention, utcnow
from storage import Store

THEMES = {
    "widget": [
        "The home screen widget disappeared after the update",
        "Where did the widget go? It vanished from my home screen",
        "Widget is gone from the home screen since yesterday's update",
        "My home screen widget won't show up anymore",
        "Can't add the widget to the home screen after updating",
        "The widget on my home screen is blank now",
    ],
    "carplay": [
        "CarPlay integration keeps disconnecting while driving",
        "The app crashes as soon as I connect to CarPlay in my car",
        "CarPlay shows a black screen with this app",
        "No audio through CarPlay since the last version",
        "CarPlay support is broken, the car display freezes",
        "Using it with CarPlay in the car is impossible now",
    ],
}


def synthetic(n_per: int, k: int, dim: int = 384, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, dim))
    labels = np.repeat(np.arange(k), n_per)
    x = centres[labels] + 0.35 * rng.normal(size=(len(labels), dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), labels


def purity(pred: np.ndarray, gold: np.ndarray) -> float:
    total = 0
    for c in np.unique(pred):
        total += np.bincount(gold[pred == c]).max()
    return total / len(gold)


def test_cluster_vectors_direct_and_two_level() -> None:
    x, gold = synthetic(40, 5)
    pred = cluster_vectors(x)
    assert purity(pred, gold) > 0.95 and len(np.unique(pred)) <= 10
    x2, gold2 = synthetic(800, 5, seed=2)  # 4,000 vectors: k-means micro-clusters first
    pred2 = cluster_vectors(x2, direct_max=1000)
    assert purity(pred2, gold2) > 0.95
    zeros = np.zeros((3, 384), np.float32)
    assert (cluster_vectors(zeros) == -1).all()


def test_ctfidf_prefers_distinctive_words() -> None:
    docs = [" ".join(THEMES["widget"]), " ".join(THEMES["carplay"])]
    kw = ctfidf_keywords(docs, top=3)
    assert "widget" in kw[0] and "carplay" in kw[1]
    assert "update" not in kw[1]


def mentions_for(texts: list[str], offset: int = 0) -> list[Mention]:
    now = utcnow()
    return [
        Mention(
            source="s",
            kind="reviews",
            native_id=f"e{offset + i}",
            url=None,
            title=None,
            text=t,
            author=None,
            created_at=now - timedelta(hours=1, minutes=i),
        )
        for i, t in enumerate(texts)
    ]


def test_build_clusters_quotes_and_labels() -> None:
    texts = THEMES["widget"] + THEMES["carplay"]
    ms = mentions_for(texts)
    vecs = EmbeddingStage().encoder.embed(texts)
    clusters = build_clusters(ms, vecs, min_size=4)
    assert len(clusters) == 2
    by_kw = {("widget" in c.keywords) for c in clusters}
    assert by_kw == {True, False}
    for c in clusters:
        assert c.size == 6 and len(c.quotes) == 3 and abs(float(np.linalg.norm(c.centroid)) - 1) < 1e-3


def test_identities_stable_across_runs(tmp_path: Path) -> None:
    db = tmp_path / "l.db"
    state = state_path_for(db)
    assert state.name == "l.emerging.json"
    with Store.open(db) as store:
        first = mentions_for(THEMES["widget"] + THEMES["carplay"])
        store.save_batch("s", first, None)
        store.save_enrichments(EmbeddingStage().run(first))
        since = utcnow() - timedelta(days=1)
        run1 = {c.keywords[0]: c for c in emerging_topics(store, since, state_path=state, min_size=4)}
        assert len(run1) == 2 and all(c.new for c in run1.values())
        more = mentions_for(["The widget vanished from my home screen again", "Widget missing after update"], 100)
        store.save_batch("s", more, None)
        store.save_enrichments(EmbeddingStage().run(more))
        run2 = emerging_topics(store, since, state_path=state, min_size=4)
        ids1 = {c.id for c in run1.values()}
        assert {c.id for c in run2} == ids1 and not any(c.new for c in run2)
        grown = max(run2, key=lambda c: c.size)
        assert grown.size == 8 and grown.previous_size == 6
        saved = load_state(state)
        assert saved["next_id"] == 3 and {c["id"] for c in saved["clusters"]} == ids1
        json.loads(state.read_text())  # valid JSON on disk


def test_covered_mentions_are_excluded(tmp_path: Path) -> None:
    with Store.open(tmp_path / "c.db") as store:
        ms = mentions_for(THEMES["carplay"])
        store.save_batch("s", ms, None)
        store.save_enrichments(EmbeddingStage().run(ms))
        store.save_enrichments(TopicStage(aspect_sentiment=False).run(ms))
        covered = store.enrichments_for([m.id for m in ms], stage="topics")
        n_free = sum(1 for m in ms if not covered[m.id]["topics"]["topics"])
        found = emerging_topics(store, utcnow() - timedelta(days=1), min_size=2)
        assert sum(c.size for c in found) <= n_free
        assert emerging_topics(store, utcnow() + timedelta(days=1)) == []
