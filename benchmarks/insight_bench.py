"""Throughput of the insight stages (one shared encoder pass) and of emerging-topic clustering.

    python benchmarks/insight_bench.py                 # 2,000 real-text mentions + 100k-vector clustering
    python benchmarks/insight_bench.py --n 5000 --store  # also sentiment + insight via enrich_pending on SQLite

Mentions are built from real texts (tests/data/eval excerpts + App Store reviews), cycled to `--n`
with a numeric suffix so the duplicate stage is not flattered by exact copies. Prints per-stage
seconds and mentions/s; the clustering part times `enrich.emerging.cluster_vectors` on synthetic
unit vectors (100k by default). Speed is measured here, never asserted in tests.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from enrich.emerging import cluster_vectors  # noqa: E402
from enrich.evaluate_insight import load_items  # noqa: E402
from enrich.stages import insight_stages  # noqa: E402
from listener.types import Mention  # noqa: E402

APPSTORE = ROOT.parent / "shared" / "corpora" / "appstore_reviews" / "customerreviews_id1321994487_us.json"


def real_texts() -> list[str]:
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


def bench_stages(n: int, batch: int) -> dict[str, tuple[float, float, float]]:
    """Per stage: (wall s, process CPU s, CPU s of this thread alone).

    The encoder's onnxruntime calls run on worker threads, so the calling thread's CPU time is the
    Python side (tokenising, pooling, regexes, numpy) without the model: the part this code controls,
    and far less noisy on a loaded machine than the model's share.
    """
    mentions = make_mentions(n)
    stages = insight_stages()
    warm = make_mentions(8)  # load models and prototypes outside the timing (cold start is printed apart)
    for stage in stages:
        stage.run(warm)
    timings: dict[str, tuple[float, float, float]] = {}
    for stage in stages:
        start, cpu, own = time.perf_counter(), time.process_time(), time.thread_time()
        for i in range(0, n, batch):
            out = stage.run(mentions[i : i + batch])
            assert len(out) == len(mentions[i : i + batch])
        timings[stage.name] = (time.perf_counter() - start, time.process_time() - cpu, time.thread_time() - own)
    return timings


def bench_batches(n: int, batch: int, with_sentiment: bool = False) -> float:
    """Mentions/s of the six stages run per batch the way `enrich_pending` runs them (`run_batch`: the
    encoder stages in order, language and duplicates beside them), without storing."""
    from concurrent.futures import ThreadPoolExecutor

    from listener.pipeline import run_batch

    mentions = make_mentions(n)
    stages = insight_stages()
    if with_sentiment:
        from enrich.sentiment import SentimentStage

        sentiment = SentimentStage()
        stages = [sentiment, *insight_stages(sentiment=sentiment.classifier)]
    for stage in stages:
        stage.run(make_mentions(8))
    with ThreadPoolExecutor(1) as side:
        start = time.perf_counter()
        for i in range(0, n, batch):
            part = mentions[i : i + batch]
            run_batch([(stage, part) for stage in stages], side)
        return n / (time.perf_counter() - start)


def bench_store(n: int, batch: int) -> float:
    from enrich.sentiment import SentimentStage
    from listener.pipeline import enrich_pending
    from storage import Store

    with tempfile.TemporaryDirectory() as tmp, Store.open(Path(tmp) / "bench.db") as store:
        store.save_batch("bench", make_mentions(n), None)
        sentiment = SentimentStage()  # the product's default order: sentiment, then the insight stages
        stages = [sentiment, *insight_stages(store=store, sentiment=sentiment.classifier)]
        for stage in stages:
            stage.run(make_mentions(8)[:4])
        start = time.perf_counter()
        done = enrich_pending(store, stages, batch_size=batch)
        secs = time.perf_counter() - start
        assert done == n  # every mention went through one batch of all stages
        return secs


def bench_cluster(n: int) -> float:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(200, 384))
    x = centres[rng.integers(0, 200, n)] + 0.8 * rng.normal(size=(n, 384))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    start = time.perf_counter()
    labels = cluster_vectors(x)
    secs = time.perf_counter() - start
    print(f"clustering {n:,} vectors: {secs:.1f} s, {len(np.unique(labels))} clusters")
    return secs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="mentions to enrich")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--cluster", type=int, default=100_000, help="vectors to cluster (0 = skip)")
    ap.add_argument("--store", action="store_true", help="also run enrich_pending on a temporary SQLite store")
    args = ap.parse_args()
    print(f"cpus: {os.cpu_count()}, load average: {os.getloadavg()[0]:.1f}")
    start = time.perf_counter()
    cold = insight_stages()
    for stage in cold:
        stage.run(make_mentions(2))
    print(
        f"cold start (load encoder, sentiment model, prototypes, language model): {time.perf_counter() - start:.2f} s"
    )
    from enrich.embedding import default_encoder

    enc = default_encoder()
    print(
        f"encoder {enc.version}: {'one text per run' if enc.per_row else f'length groups of up to {enc.max_batch}'}, "
        f"{enc.workers} worker(s) x {enc.model.intra_op_threads} onnxruntime thread(s)"
    )
    timings = bench_stages(args.n, args.batch)
    total = sum(w for w, _, _ in timings.values())
    cpu_total = sum(c for _, c, _ in timings.values())
    own_total = sum(o for _, _, o in timings.values())
    for name, (secs, cpu, own) in timings.items():
        print(
            f"  {name:<11} {secs:7.2f} s wall {cpu:7.2f} s cpu  {args.n / secs:9.0f} mentions/s  "
            f"{1000 * cpu / args.n:6.3f} cpu-ms/mention ({1000 * own / args.n:.3f} in the calling thread)"
        )
    print(f"all insight stages: {total:.2f} s wall for {args.n} mentions = {args.n / total:.0f} mentions/s")
    print(f"calling thread (all but the encoder's model calls): {1000 * own_total / args.n:.2f} cpu-ms per mention")
    # CPU seconds are what the stages cost; on 2 otherwise idle cores the wall rate approaches n / (cpu / 2).
    print(
        f"cpu: {cpu_total:.2f} s = {1000 * cpu_total / args.n:.1f} cpu-ms per mention "
        f"(≈ {2 * args.n / cpu_total:.0f} mentions/s if 2 cores were free)"
    )
    insight_rate = bench_batches(args.n, args.batch)
    print(f"all insight stages per batch, as enrich_pending runs them: {insight_rate:.0f} mentions/s")
    both_rate = bench_batches(args.n, args.batch, with_sentiment=True)
    print(f"sentiment + insight stages per batch: {both_rate:.0f} mentions/s")
    if args.store:
        secs = bench_store(args.n, args.batch)
        print(
            f"end-to-end enrich_pending on SQLite, sentiment + 6 insight stages: {secs:.2f} s = "
            f"{args.n / secs:.0f} mentions/s"
        )
    if args.cluster:
        bench_cluster(args.cluster)


if __name__ == "__main__":
    main()
