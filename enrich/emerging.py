"""Emerging topics: recurring themes in recent mentions that the taxonomy does not cover yet.

Run periodically (e.g. daily with the digest). Recent mentions without any taxonomy topic are
clustered on their stored embeddings; each cluster is labelled with c-TF-IDF keywords and its most
central quotes. Identities are stable across runs: a new cluster inherits the id of the previous
run's cluster whose centroid is closest (cosine ≥ `match_cosine`, one-to-one), so "battery drain on
Android 15" stays `em-0007` while it grows. State is a JSON file beside the database for now.

Clustering scales by two levels: up to `direct_max` vectors go straight into average-linkage
agglomerative clustering (cosine); above that, a numpy spherical k-means first compresses them
into micro-clusters whose centroids are then clustered the same way (100k vectors in well under 60 s,
see benchmarks/insight_bench.py). scikit-learn is imported lazily, only here.
"""

from __future__ import annotations

import base64
import json
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from enrich.embedding import mention_text
from enrich.vectors import load_vectors

if TYPE_CHECKING:
    from listener.types import Mention
    from storage import Store

DISTANCE = 0.45
MIN_SIZE = 5
MATCH_COSINE = 0.8
_TOKEN = re.compile(r"(?u)\b[^\W\d_][\w'-]{2,}\b")


def state_path_for(db_path: str | Path) -> Path:
    """Where the cluster state lives for a SQLite file (`listener.db` → `listener.emerging.json`)."""
    p = Path(db_path)
    return p.with_name(p.stem + ".emerging.json")


def spherical_kmeans(x: np.ndarray, k: int, iters: int = 8, seed: int = 0) -> np.ndarray:
    """Cosine k-means in plain numpy (chunked matmul + argmax): the micro-cluster step for large inputs.

    Measured faster and steadier than scikit-learn's MiniBatchKMeans on a shared 2-core machine,
    where OpenMP thread oversubscription made the latter 7× slower.
    """
    rng = np.random.default_rng(seed)
    cents = x[rng.choice(len(x), size=k, replace=False)].copy()
    labels = np.zeros(len(x), dtype=np.int64)
    for _ in range(iters):
        for start in range(0, len(x), 8192):
            labels[start : start + 8192] = (x[start : start + 8192] @ cents.T).argmax(axis=1)
        sums = np.zeros_like(cents)
        np.add.at(sums, labels, x)
        empty = np.bincount(labels, minlength=k) == 0
        sums[empty] = cents[empty]
        cents = sums / np.linalg.norm(sums, axis=1, keepdims=True).clip(min=1e-9)
    return labels


def cluster_vectors(vecs: np.ndarray, distance: float = DISTANCE, direct_max: int = 3000, seed: int = 0) -> np.ndarray:
    """Cluster label per row (−1 for zero vectors). Unit vectors expected; cosine distance."""
    from sklearn.cluster import AgglomerativeClustering

    labels = np.full(len(vecs), -1, dtype=np.int64)
    ok = np.flatnonzero(np.abs(vecs).sum(axis=1) > 0)
    if len(ok) < 2:
        labels[ok] = 0
        return labels
    x = vecs[ok].astype(np.float32)
    agg = AgglomerativeClustering(n_clusters=None, metric="cosine", linkage="average", distance_threshold=distance)
    if len(x) <= direct_max:
        labels[ok] = agg.fit_predict(x)
        return labels
    micro = spherical_kmeans(x, k=max(2, min(len(x) // 50, 1000)), seed=seed)
    used = np.unique(micro)
    cents = np.stack([x[micro == c].mean(axis=0) for c in used])
    top = np.zeros(int(micro.max()) + 1, dtype=np.int64)
    top[used] = agg.fit_predict(cents / np.linalg.norm(cents, axis=1, keepdims=True).clip(min=1e-9))
    labels[ok] = top[micro]
    return labels


def ctfidf_keywords(docs: Sequence[str], top: int = 6) -> list[list[str]]:
    """c-TF-IDF (BERTopic's): W(t, c) = tf(t, c) · log(1 + A / f(t)), one document per cluster.

    tf is the term's share of the cluster's words, f(t) its count over all clusters, A the mean
    words per cluster: terms frequent in this cluster and rare elsewhere win.
    """
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    counts: list[dict[str, int]] = []
    freq: dict[str, int] = {}
    for doc in docs:
        c: dict[str, int] = {}
        for w in _TOKEN.findall(doc.lower()):
            if w not in ENGLISH_STOP_WORDS and w not in ("http", "https", "user"):
                c[w] = c.get(w, 0) + 1
        counts.append(c)
        for w, n in c.items():
            freq[w] = freq.get(w, 0) + n
    avg = float(np.mean([sum(c.values()) for c in counts])) if counts else 1.0
    out = []
    for c in counts:
        total = max(1, sum(c.values()))
        scored = sorted(((n / total) * float(np.log(1 + avg / freq[w])), w) for w, n in c.items())
        out.append([w for _, w in reversed(scored[-top:])])
    return out


@dataclass
class EmergingCluster:
    id: str
    size: int
    keywords: list[str]
    quotes: list[dict[str, str]]
    centroid: np.ndarray = field(repr=False)
    new: bool = True
    previous_size: int = 0
    first_seen: str = ""
    members: list[str] = field(default_factory=list, repr=False)  # mention ids, for counting per period

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "size": self.size,
            "keywords": self.keywords,
            "quotes": self.quotes,
            "new": self.new,
            "previous_size": self.previous_size,
            "first_seen": self.first_seen,
        }


def _enc(v: np.ndarray) -> str:
    return base64.b64encode(v.astype("<f2").tobytes()).decode("ascii")


def _dec(s: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(s), dtype="<f2").astype(np.float32)


def load_state(path: Path | None) -> dict[str, Any]:
    if path is None or not path.exists():
        return {"next_id": 1, "clusters": []}
    try:
        data: dict[str, Any] = json.loads(path.read_text("utf-8"))
        return data if isinstance(data.get("clusters"), list) else {"next_id": 1, "clusters": []}
    except (OSError, ValueError):
        return {"next_id": 1, "clusters": []}


def save_state(path: Path, clusters: Sequence[EmergingCluster], next_id: int, now: datetime) -> None:
    data = {
        "next_id": next_id,
        "updated_at": now.isoformat(),
        "clusters": [{**c.as_dict(), "centroid": _enc(c.centroid), "last_seen": now.isoformat()} for c in clusters],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False)
    os.replace(tmp, path)  # atomic: a crash never leaves half a state file


def match_identities(
    clusters: list[EmergingCluster], state: dict[str, Any], now: datetime, match_cosine: float = MATCH_COSINE
) -> int:
    """Give clusters the ids of the closest previous clusters (greedy one-to-one); returns next_id."""
    old = [c for c in state.get("clusters", []) if c.get("centroid")]
    next_id = int(state.get("next_id", 1))
    taken: set[int] = set()
    if old and clusters:
        sims = np.stack([c.centroid for c in clusters]) @ np.stack([_dec(o["centroid"]) for o in old]).T
        for flat in np.argsort(-sims, axis=None):
            i, j = divmod(int(flat), len(old))
            if sims[i, j] < match_cosine:
                break
            if clusters[i].new and j not in taken:
                taken.add(j)
                clusters[i].id, clusters[i].new = old[j]["id"], False
                clusters[i].previous_size = int(old[j].get("size", 0))
                clusters[i].first_seen = str(old[j].get("first_seen") or now.isoformat())
    for c in clusters:
        if c.new:
            c.id, c.first_seen = f"em-{next_id:04d}", now.isoformat()
            next_id += 1
    return next_id


def build_clusters(
    mentions: Sequence[Mention], vecs: np.ndarray, distance: float = DISTANCE, min_size: int = MIN_SIZE
) -> list[EmergingCluster]:
    labels = cluster_vectors(vecs, distance)
    found = [np.flatnonzero(labels == k) for k in np.unique(labels[labels >= 0])]
    groups = [[int(i) for i in g] for g in sorted((g for g in found if len(g) >= min_size), key=len, reverse=True)]
    docs = [" ".join(mention_text(mentions[i])[:2000] for i in g) for g in groups]
    keywords = ctfidf_keywords(docs)
    out = []
    for g, kw in zip(groups, keywords, strict=True):
        cent = vecs[g].mean(axis=0)
        cent /= max(float(np.linalg.norm(cent)), 1e-9)
        central = [g[int(k)] for k in np.argsort(-(vecs[g] @ cent))[:3]]
        quotes = [{"id": mentions[i].id, "text": mention_text(mentions[i])[:240]} for i in central]
        out.append(EmergingCluster("", len(g), kw, quotes, cent, members=[mentions[i].id for i in g]))
    return out


def emerging_topics(
    store: Store,
    since: datetime,
    until: datetime | None = None,
    *,
    state_path: Path | None = None,
    distance: float = DISTANCE,
    min_size: int = MIN_SIZE,
    include_covered: bool = False,
) -> list[EmergingCluster]:
    """Cluster recent mentions not covered by the taxonomy; persist identities when `state_path` is given."""
    from datetime import timedelta

    from listener.types import utcnow

    now = utcnow()
    mentions = store.mentions_between(since, until or now + timedelta(seconds=1))
    if not include_covered and mentions:
        topics = store.enrichments_for([m.id for m in mentions], stage="topics")
        mentions = [m for m in mentions if not (topics.get(m.id, {}).get("topics") or {}).get("topics")]
    vecs = load_vectors(store, [m.id for m in mentions]) if mentions else np.zeros((0, 384), np.float32)
    clusters = build_clusters(mentions, vecs, distance, min_size) if len(mentions) >= min_size else []
    state = load_state(state_path)
    next_id = match_identities(clusters, state, now)
    if state_path is not None:
        save_state(state_path, clusters, next_id, now)
    return clusters
