"""The insight stages in run order, plus the search surfaces `filter_ids` and `semantic_search`.

The embedding stage runs first and fills the shared in-process vector cache (and the store); the
topic/intent/journey stages then read vectors instead of re-encoding. All stages share one encoder
instance, so the model loads once per process.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from enrich.base import Stage
from enrich.duplicates import DuplicateStage
from enrich.embedding import default_encoder, embed_texts
from enrich.intent import IntentStage
from enrich.journey import JourneyStage
from enrich.language import LanguageStage
from enrich.topics import TopicStage, taxonomy_from_config
from enrich.vectors import EmbeddingStage, load_vectors

if TYPE_CHECKING:
    from listener.config import Config
    from storage import Store


def insight_stages(config: Config | None = None, store: Store | None = None, sentiment: Any = None) -> list[Stage]:
    """[embedding, topics, intent, journey, language, duplicates] sharing one lazily loaded encoder.

    Pass the store so later stages read stored vectors when the in-process cache misses (e.g. a
    restart between stages) and the duplicate index warm-starts from recent mentions. Pass the
    sentiment stage's `SentimentClassifier` so aspect sentiment reuses that loaded model.
    """
    encoder = default_encoder()
    return [
        EmbeddingStage(encoder),
        TopicStage(taxonomy_from_config(config), store=store, encoder=encoder, sentiment=sentiment),
        IntentStage(store=store, encoder=encoder),
        JourneyStage(store=store, encoder=encoder),
        LanguageStage(),
        DuplicateStage(store=store),
    ]


def _matches(data: dict[str, dict[str, Any]], key: str, wanted: str) -> bool:
    wanted = wanted.strip().lower()
    if key == "topic":
        return any(str(t.get("name", "")).lower() == wanted for t in (data.get("topics") or {}).get("topics", []))
    if key == "intent":
        return str((data.get("intent") or {}).get("label", "")).lower() == wanted
    if key == "stage":
        return str((data.get("journey") or {}).get("label", "")).lower() == wanted
    if key == "lang":
        return str((data.get("language") or {}).get("lang", "")).lower() == wanted
    if key == "sentiment":
        return str((data.get("sentiment") or {}).get("label", "")).lower() == wanted
    if key == "canonical":
        return bool((data.get("duplicates") or {}).get("canonical", True)) == (wanted in ("1", "true", "yes"))
    raise ValueError(f"unknown filter {key!r}")


def filter_ids(
    store: Store,
    ids: Sequence[str],
    *,
    topic: str | None = None,
    intent: str | None = None,
    stage: str | None = None,
    lang: str | None = None,
    sentiment: str | None = None,
    canonical_only: bool = False,
) -> list[str]:
    """Keep the ids (order preserved) whose newest enrichments match every filter given.

    Works over `Store.enrichments_for` on a given list of ids; mentions not enriched yet never match
    a filter. Searches filter in SQL instead (`Store.search(labels=…)`, the `mention_label` rows), with
    the same rules: case-insensitive, newest result per stage, no duplicates result = canonical.
    """
    wanted = {"topic": topic, "intent": intent, "stage": stage, "lang": lang, "sentiment": sentiment}
    active = {k: v for k, v in wanted.items() if v}
    if canonical_only:
        active["canonical"] = "true"
    if not active or not ids:
        return list(ids)
    found = store.enrichments_for(list(ids))
    return [mid for mid in ids if all(_matches(found.get(mid, {}), k, v) for k, v in active.items())]


def semantic_search(store: Store, text: str, k: int = 20, ids: Sequence[str] | None = None) -> list[tuple[str, float]]:
    """Brute-force cosine top-k over stored vectors, in chunks so memory stays flat (fine to ~1M).

    `ids` limits the candidates (e.g. a filtered search page); default: every stored mention, read
    page by page through `Store.search`. Returns (mention_id, cosine) best first.
    """
    query = embed_texts([text])[0]
    if not query.any() or k < 1:
        return []
    best_ids: list[str] = []
    best_scores = np.zeros(0, dtype=np.float32)
    for chunk in _id_chunks(store, ids):
        vecs = load_vectors(store, chunk)
        scores = vecs @ query
        keep = scores > 0
        cand_ids = best_ids + [c for c, ok in zip(chunk, keep, strict=True) if ok]
        cand = np.concatenate([best_scores, scores[keep]])
        top = np.argsort(-cand, kind="stable")[:k]
        best_ids, best_scores = [cand_ids[i] for i in top], cand[top]
    return [(i, round(float(s), 4)) for i, s in zip(best_ids, best_scores, strict=True)]


def _id_chunks(store: Store, ids: Sequence[str] | None, size: int = 1000) -> Iterable[list[str]]:
    if ids is not None:
        for start in range(0, len(ids), size):
            yield list(ids[start : start + size])
        return
    after = None
    while True:
        page = store.search(limit=size, after=after)
        if page.items:
            yield [item.id for item in page.items]
        if not page.next_after:
            return
        after = page.next_after
