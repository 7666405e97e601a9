"""`listener bench --insight`: throughput of the insight stages and of emerging-topic clustering.

Mentions are built from real texts (the hand-labelled evaluation excerpts in tests/data/eval plus the
App Store reviews in the shared corpora), cycled to `n` with a numeric suffix so the duplicate stage
is not flattered by exact copies. Three rates, all on the same mentions:
- per stage: each stage alone over every batch (where the time goes);
- per batch, the way `enrich_pending` runs them (`BatchRunner`: the next batch's embedding under way,
  independent stages beside the encoder stages), the six insight stages and then with sentiment too;
  that is the issue's figure;
- optionally `enrich_pending` itself on a temporary SQLite store (storing included).
Clustering times `enrich.emerging.cluster_vectors` on synthetic unit vectors. Speed is measured here,
never asserted in tests.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from enrich.base import ENRICH_BATCH
from listener.bench import CORPORA
from listener.types import Mention

APPSTORE = CORPORA / "appstore_reviews" / "customerreviews_id1321994487_us.json"


def real_texts() -> list[str]:
    from enrich.evaluate_insight import load_items

    texts = [i.text for i in load_items()]
    if APPSTORE.exists():
        feed = json.loads(APPSTORE.read_text("utf-8"))["feed"]["entry"]
        texts += [f"{e['title']['label']}. {e['content']['label']}" for e in feed]
    return texts


def make_mentions(n: int) -> list[Mention]:
    texts = real_texts()
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    return [
        Mention(
            source="bench",
            kind="reviews",
            native_id=str(i),
            url=None,
            title=None,
            text=f"{texts[i % len(texts)]} #{i // len(texts)}" if i >= len(texts) else texts[i],
            author=None,
            created_at=t0 + timedelta(seconds=i),
        )
        for i in range(n)
    ]


def _stages(with_sentiment: bool, store: Any = None) -> list[Any]:
    from enrich.stages import insight_stages

    if not with_sentiment:
        return insight_stages(store=store)
    from enrich.sentiment import SentimentStage

    sentiment = SentimentStage()
    return [sentiment, *insight_stages(store=store, sentiment=sentiment.classifier)]


def per_stage(mentions: list[Mention], batch: int) -> dict[str, dict[str, float]]:
    """Per stage: wall s, process CPU s, and CPU s of the calling thread alone (the Python side: the
    encoder's onnxruntime calls run on worker threads), each stage over every batch in turn."""
    stages = _stages(False)
    for stage in stages:  # load models and prototypes outside the timing
        stage.run(mentions[:8])
    out: dict[str, dict[str, float]] = {}
    for stage in stages:
        start, cpu, own = time.perf_counter(), time.process_time(), time.thread_time()
        for i in range(0, len(mentions), batch):
            stage.run(mentions[i : i + batch])
        out[stage.name] = {
            "wall_s": round(time.perf_counter() - start, 3),
            "cpu_s": round(time.process_time() - cpu, 3),
            "thread_cpu_s": round(time.thread_time() - own, 3),
        }
    return out


def per_batch(mentions: list[Mention], batch: int, with_sentiment: bool = False) -> float:
    """Mentions/s of all stages per batch as `enrich_pending` runs them (`BatchRunner`), without storing."""
    from listener.pipeline import BatchRunner

    stages = _stages(with_sentiment)
    for stage in stages:
        stage.run(mentions[:8])
    parts = [mentions[i : i + batch] for i in range(0, len(mentions), batch)]
    with BatchRunner() as runner:
        start = time.perf_counter()
        for _ in runner.run((part, [(stage, part) for stage in stages]) for part in parts):
            pass
        return len(mentions) / (time.perf_counter() - start)


def end_to_end(mentions: list[Mention], batch: int) -> float:
    """Mentions/s of `enrich_pending` (sentiment + insight stages + storing) on a temporary SQLite store."""
    from listener.pipeline import enrich_pending
    from storage import Store

    with tempfile.TemporaryDirectory() as tmp, Store.open(Path(tmp) / "bench.db") as store:
        store.save_batch("bench", mentions, None)
        stages = _stages(True, store)
        for stage in stages:
            stage.run(mentions[:4])
        start = time.perf_counter()
        done = enrich_pending(store, stages, batch_size=batch)
        secs = time.perf_counter() - start
        if done != len(mentions):
            raise RuntimeError(f"enrich_pending enriched {done} of {len(mentions)} mentions")
        return len(mentions) / secs


def cluster_seconds(n: int) -> tuple[float, int]:
    from enrich.emerging import cluster_vectors

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(200, 384))
    x = centres[rng.integers(0, 200, n)] + 0.8 * rng.normal(size=(n, 384))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    start = time.perf_counter()
    labels = cluster_vectors(x)
    return time.perf_counter() - start, len(np.unique(labels))


def run_insight_bench(
    n: int = 2000, batch: int = ENRICH_BATCH, cluster: int = 100_000, store: bool = True
) -> dict[str, Any]:
    from enrich.embedding import default_encoder
    from enrich.stages import insight_stages

    load_start = os.getloadavg()[0]
    start = time.perf_counter()
    for stage in insight_stages():
        stage.run(make_mentions(2))
    cold = time.perf_counter() - start
    enc = default_encoder()
    mentions = make_mentions(n)
    stages = per_stage(mentions, batch)
    result: dict[str, Any] = {
        "n": n,
        "batch": batch,
        "cpu_count": os.cpu_count(),
        "encoder": enc.version,
        "encoder_mode": "one text per run" if enc.per_row else f"length groups of up to {enc.max_batch}",
        "workers": enc.workers,
        "cold_start_s": round(cold, 2),
        "per_stage": stages,
        "insight_per_batch_per_s": round(per_batch(mentions, batch)),
        "with_sentiment_per_batch_per_s": round(per_batch(mentions, batch, with_sentiment=True)),
    }
    if store:
        result["enrich_pending_sqlite_per_s"] = round(end_to_end(mentions, batch))
    if cluster:
        secs, clusters = cluster_seconds(cluster)
        result["cluster"] = {"vectors": cluster, "seconds": round(secs, 2), "clusters": clusters}
    result["loadavg_1min"] = {"start": round(load_start, 2), "end": round(os.getloadavg()[0], 2)}
    return result


def format_insight(result: dict[str, Any]) -> str:
    n = result["n"]
    lines = [
        f"insight bench: {n} mentions (evaluation excerpts + App Store reviews), batches of {result['batch']}; "
        f"encoder {result['encoder']} ({result['encoder_mode']}, {result['workers']} worker(s))",
        f"cold start (encoder, sentiment model, prototypes, language model): {result['cold_start_s']} s",
        "",
        "each stage alone:",
    ]
    for name, t in result["per_stage"].items():
        lines.append(
            f"  {name:<11} {t['wall_s']:7.2f} s wall {n / t['wall_s']:8.0f} mentions/s  "
            f"{1000 * t['cpu_s'] / n:6.3f} cpu-ms/mention ({1000 * t['thread_cpu_s'] / n:.3f} in the calling thread)"
        )
    cpu = sum(t["cpu_s"] for t in result["per_stage"].values())
    lines += [
        f"  cpu: {1000 * cpu / n:.1f} cpu-ms per mention",
        "",
        f"six insight stages per batch, as enrich_pending runs them: {result['insight_per_batch_per_s']} mentions/s",
        f"sentiment + six insight stages per batch: {result['with_sentiment_per_batch_per_s']} mentions/s",
    ]
    if "enrich_pending_sqlite_per_s" in result:
        stored = result["enrich_pending_sqlite_per_s"]
        lines.append(f"enrich_pending on SQLite (all stages + storing): {stored} mentions/s")
    if "cluster" in result:
        c = result["cluster"]
        lines.append(f"clustering {c['vectors']:,} vectors: {c['seconds']} s, {c['clusters']} clusters")
    la = result["loadavg_1min"]
    lines.append(f"machine load average (1 min) during the run: {la['start']} → {la['end']} (other work skews figures)")
    return "\n".join(lines)
