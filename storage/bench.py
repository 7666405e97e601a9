"""Ingestion throughput of `Store.save_batch`, for `listener bench` or ``python -m storage.bench``.

Synthetic but realistic mentions (60-word texts, title, author, watch match, extra) saved in
batches into a fresh SQLite file; best of a few rounds, in wall and CPU time (CPU time is the
honest figure on a busy machine). Target: ≥ 20k new mentions/s for 1k-mention batches.
"""

from __future__ import annotations

import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from listener.types import Cursor, Mention
from storage.store import Store

WORDS = ("acme", "cloud", "billing", "outage", "support", "pricing", "login", "crash", "great", "slow", "update")


def synthetic_mention(i: int) -> Mention:
    return Mention(
        source="bench",
        kind="reddit",
        native_id=f"t3_{i}",
        url=f"https://example.com/r/acme/{i}",
        title=f"Post {i} about acme",
        text=" ".join(WORDS[(i * 7 + k) % len(WORDS)] for k in range(60)),
        author=f"user{i % 500}",
        created_at=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=i),
        score=float(i % 100),
        comments=i % 30,
        matched=("acme",),
        extra={"subreddit": "acme"},
        raw=f'{{"id": "{i}"}}',
    )


def time_saves(store: Store, data: list[list[Mention]], best: dict[str, float]) -> None:
    """One round on an empty store: first saves ("new") then re-saves ("duplicates"); keeps the best
    mentions/s per label and clock (wall, CPU) in `best`."""
    total = sum(len(batch) for batch in data)
    for label in ("new", "duplicates"):
        wall, cpu = time.perf_counter(), time.process_time()
        for b, batch in enumerate(data):
            store.save_batch("bench", batch, Cursor(last_id=str(b)))
        rates = {"wall": total / (time.perf_counter() - wall), "cpu": total / (time.process_time() - cpu)}
        for clock, rate in rates.items():
            key = f"{label}_per_s_{clock}"
            best[key] = max(best.get(key, 0.0), rate)


def measure_ingest(batches: int = 20, size: int = 1000, rounds: int = 3) -> dict[str, float]:
    """Mentions per second for first saves ("new") and re-saves ("duplicates"), wall and CPU."""
    data = [[synthetic_mention(b * size + i) for i in range(size)] for b in range(batches)]
    best: dict[str, float] = {}
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as tmp:
            store = Store.open(Path(tmp) / "bench.db")
            try:
                time_saves(store, data, best)
            finally:
                store.close()
    return {"batch_size": float(size), **best}


def main(argv: list[str]) -> None:
    result = measure_ingest(*(int(a) for a in argv[:3]))
    size = int(result.pop("batch_size"))
    for key, value in result.items():
        print(f"{key:<26} {value:>10,.0f}   (batches of {size})")


if __name__ == "__main__":
    main(sys.argv[1:])
