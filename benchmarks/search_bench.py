"""Search latency at scale: N synthetic-but-realistic mentions in SQLite, then the API's typical queries.

    python benchmarks/search_bench.py --n 1000000 --db /tmp/bench.db      # generate (if needed) + measure
    python benchmarks/search_bench.py --n 20000 --db /tmp/small.db --repeat 10

Mentions read like customer talk about a note-taking app ("Acme Notes") and two competitors: product and
feature words, complaints and praise, a long tail of rarer words, titles where the source has them, 10
sources of 8 kinds, 60k authors, watch matches (80% / 12% / 6%), timestamps over the last 365 days fetched
roughly in time order (with some late backfill), and a sentiment enrichment on ~60%. They are saved through
`Store.save_batch` in batches (ingest rate reported), so the FTS index, watch rows and triggers are the
real ones. An existing --db holding exactly --n mentions is reused.

Then every query runs `--repeat` times (after a warm-up) through the FastAPI app (`TestClient`, so
validation, JSON rendering and enrichment look-ups count) and the full-text ones also straight through
`Store.search`; p50/p95 are printed (and written as JSON with --json). Targets: API p95 < 100 ms,
full-text p95 < 50 ms. Speed is measured here, never asserted in tests.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fastapi.testclient import TestClient  # noqa: E402

from enrich.base import Enrichment  # noqa: E402
from listener.api import create_app  # noqa: E402
from listener.config import Config, SourceConfig  # noqa: E402
from listener.matching import WatchQuery  # noqa: E402
from listener.types import Cursor, Mention  # noqa: E402
from storage import Store  # noqa: E402

SOURCES = (  # name, kind, share of mentions, has titles
    ("reddit-notes", "reddit", 0.24, True),
    ("hn", "hackernews", 0.10, True),
    ("community", "discourse", 0.16, True),
    ("stack", "stackexchange", 0.05, True),
    ("lemmy", "lemmy", 0.03, True),
    ("mastodon", "mastodon", 0.10, False),
    ("appstore-us", "appstore", 0.14, True),
    ("appstore-gb", "appstore", 0.04, True),
    ("play", "googleplay", 0.09, False),
    ("blogs", "rss", 0.05, True),
)
WATCHES = (("acme-notes", 0.80, False), ("notably", 0.12, True), ("papertrail", 0.06, True))
BRANDS = {"acme-notes": ["Acme Notes", "acmenotes", "the acme app"], "notably": ["Notably", "notably app"],
          "papertrail": ["PaperTrail", "papertrail"]}  # fmt: skip
FEATURES = (
    "sync", "offline mode", "dark mode", "export", "pdf export", "markdown", "widgets", "search", "tags",
    "encryption", "backup", "calendar", "ipad app", "android app", "iphone app", "desktop app", "web clipper",
    "sharing", "templates", "handwriting", "ocr", "reminders", "folders", "attachments", "login", "pro plan",
    "subscription", "pricing", "import from evernote", "apple watch", "keyboard shortcuts", "linking",
)  # fmt: skip
PROBLEMS = (
    "keeps crashing", "is so slow", "lost my notes", "won't sync", "logs me out", "drains the battery",
    "is broken since the update", "duplicates everything", "freezes on startup", "shows a blank page",
    "charged me twice", "ignores my shortcuts", "corrupted an attachment", "is missing half my tags",
)  # fmt: skip
PRAISE = (
    "works great", "is really fast", "saved my semester", "is worth the price", "is beautifully designed",
    "finally fixed it", "is rock solid", "feels snappy", "is exactly what I needed", "just works",
)  # fmt: skip
OPENERS = (
    "Honestly", "Quick question:", "Update:", "PSA:", "Anyone else?", "Love it.", "Ugh.", "So", "FYI",
    "Been using it for a year and", "After the latest update", "Switched last month and", "Support said",
)  # fmt: skip
FILLER = (
    "the", "and", "it", "my", "for", "with", "on", "when", "after", "every", "time", "but", "just", "now",
    "really", "still", "again", "today", "week", "team", "work", "phone", "laptop", "notes", "note", "app",
    "version", "feature", "please", "help", "anyone", "thanks", "issue", "bug", "request", "idea", "customer",
)  # fmt: skip
SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "ta", "vo", "shi", "bel", "dor", "fen", "gri", "hal", "jun", "kor")
RARE = tuple(a + b + c for a in SYLLABLES for b in SYLLABLES for c in SYLLABLES[:6])  # 1,350 long-tail words
LANGS = ("en",) * 17 + ("de", "fr", "es")
SENTIMENTS = (("negative", 0.35), ("neutral", 0.35), ("positive", 0.30))


def _pick(rng: random.Random, weighted: tuple[tuple[Any, float], ...]) -> Any:
    return rng.choices([w[0] for w in weighted], weights=[w[1] for w in weighted])[0]


def _text(rng: random.Random, brand: str, negative: bool) -> str:
    feature = rng.choice(FEATURES)
    verdict = rng.choice(PROBLEMS if negative else PRAISE)
    parts = [rng.choice(OPENERS), brand, feature, verdict + "."]
    for _ in range(rng.randint(1, 5)):
        words = rng.choices(FILLER, k=rng.randint(4, 12))
        if rng.random() < 0.5:
            words.insert(rng.randrange(len(words)), rng.choice(FEATURES))
        if rng.random() < 0.35:
            words.insert(rng.randrange(len(words)), rng.choice(RARE))
        parts.append(" ".join(words) + rng.choice((".", ".", "?", "!")))
    return " ".join(parts)


def generate(n: int, seed: int, batch: int, end: datetime) -> Iterator[tuple[str, list[Mention], list[Enrichment]]]:
    """Batches of one source each, marching through the year like a listener fetching continuously."""
    rng = random.Random(seed)
    start = end - timedelta(days=365)
    span = (end - start).total_seconds()
    weights = [s[2] for s in SOURCES]
    made = 0
    while made < n:
        size = min(batch, n - made)
        name, kind, _, titled = rng.choices(SOURCES, weights=weights)[0]
        centre = made / n * span
        mentions, enrichments = [], []
        for i in range(size):
            k = made + i
            late = rng.random() < 0.03  # backfill / late edits: anywhere in the past
            offset = rng.uniform(0, centre) if late else min(span - 1, max(0.0, centre + rng.gauss(0, 3600 * 6)))
            watch = _pick(rng, tuple((w[0], w[1]) for w in WATCHES))
            matched = (watch,) if rng.random() > 0.05 else (watch, "acme-notes")
            negative = rng.random() < 0.4
            text = _text(rng, rng.choice(BRANDS[watch]), negative)
            thread = f"t{k // 7}" if kind in ("reddit", "hackernews", "discourse", "lemmy") else None
            m = Mention(
                source=name,
                kind=kind,
                native_id=f"{k}",
                url=f"https://{name}.example.com/item/{k}",
                title=" ".join(text.split()[:8]) if titled and rng.random() < 0.6 else None,
                text=text,
                author=f"user{int(rng.paretovariate(1.2)) % 60000}",
                created_at=start + timedelta(seconds=offset),
                fetched_at=start + timedelta(seconds=min(span, centre + 3600)),
                thread_id=thread,
                score=float(int(rng.paretovariate(1.5))) if kind not in ("appstore", "googleplay", "rss") else None,
                comments=int(rng.paretovariate(2)) if thread else None,
                rating=float(rng.randint(1, 2) if negative else rng.randint(3, 5))
                if "app" in kind or kind == "googleplay"
                else None,
                language=rng.choice(LANGS),
                matched=tuple(dict.fromkeys(matched)),
                extra={"subreddit": "acmenotes"} if kind == "reddit" else {},
            )
            mentions.append(m)
            if rng.random() < 0.6:
                label = "negative" if negative and rng.random() < 0.85 else _pick(rng, SENTIMENTS)
                enrichments.append(
                    Enrichment(m.id, "sentiment", "bench-v1", {"label": label, "score": round(rng.uniform(0.5, 1), 3)})
                )
        made += size
        yield name, mentions, enrichments


def config() -> Config:
    return Config(
        path=None,
        watches=tuple(WatchQuery.build(name, [name], competitor=comp) for name, _, comp in WATCHES),
        sources=tuple(SourceConfig(name, kind) for name, kind, _, _ in SOURCES),
    )


def fill(store: Store, n: int, seed: int, batch: int, end: datetime) -> dict[str, float]:
    t0, saving, enriching, gen = time.perf_counter(), 0.0, 0.0, 0.0
    done = 0
    tick = time.perf_counter()
    it = generate(n, seed, batch, end)
    while True:
        g = time.perf_counter()
        try:
            source, mentions, enrichments = next(it)
        except StopIteration:
            break
        s = time.perf_counter()
        gen += s - g
        store.save_batch(source, mentions, Cursor(last_id=mentions[-1].native_id))
        e = time.perf_counter()
        saving += e - s
        store.save_enrichments(enrichments)
        enriching += time.perf_counter() - e
        done += len(mentions)
        if time.perf_counter() - tick > 15:
            tick = time.perf_counter()
            print(f"  {done:>9,} saved  ({done / saving:,.0f} mentions/s in save_batch)", flush=True)
    return {
        "mentions": done,
        "wall_s": time.perf_counter() - t0,
        "generate_s": gen,
        "save_batch_s": saving,
        "save_batch_per_s": done / saving,
        "save_enrichments_s": enriching,
    }


def timed(fn: Callable[[], Any], repeat: int, budget_s: float = 20.0) -> tuple[list[float], list[float]]:
    """(wall, CPU) timings in ms after one warm-up; a query slower than the budget allows gets at least 3.

    CPU time (this process, all threads) is the honest figure on a shared machine: it leaves out the time
    spent waiting for a core that another job holds.
    """
    fn()  # warm-up (statement cache, pages)
    wall: list[float] = []
    cpu: list[float] = []
    began = time.perf_counter()
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append((time.perf_counter() - t) * 1000)
        cpu.append((time.process_time() - c) * 1000)
        if len(wall) >= 3 and time.perf_counter() - began > budget_s:
            break
    return wall, cpu


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


class Rotating:
    """Each call takes the next value, so repeats do not just re-read one cached result."""

    def __init__(self, values: list[Any]) -> None:
        self.values, self.i = values, 0

    def __call__(self) -> Any:
        self.i += 1
        return self.values[self.i % len(self.values)]


def measure(store: Store, repeat: int, end: datetime, only: str | None = None) -> dict[str, dict[str, float]]:
    client = TestClient(create_app(store, config()))

    def api(path: str, params: Callable[[], dict[str, Any]] | dict[str, Any]) -> Callable[[], Any]:
        def call() -> Any:
            r = client.get(path, params=params() if callable(params) else params)
            assert r.status_code == 200, r.text
            return r

        return call

    common = Rotating(["sync", "export", "search", "backup", "widgets", "calendar", "login", "crashing"])
    rare = Rotating(list(RARE[:50]))
    phrases = Rotating(['"offline mode"', '"dark mode"', '"lost my notes"', '"pdf export"', '"won\'t sync"'])
    ors = Rotating(["sync OR backup", "crashing OR freezes", "pricing OR subscription", "ocr OR handwriting"])
    excl = Rotating(["sync -android", "export -pdf", "notes -iphone", "search -tags"])
    sources = Rotating([s[0] for s in SOURCES])
    week = (end - timedelta(days=7)).isoformat()

    # Page 50 of a common query: walk there once, then time fetching it.
    token = None
    for _ in range(49):
        token = client.get("/api/mentions", params={"limit": 50, **({"after": token} if token else {})}).json()[
            "next_after"
        ]
    some_id = client.get("/api/mentions", params={"source": "reddit-notes", "limit": 1}).json()["items"][0]["id"]

    cases: dict[str, Callable[[], Any]] = {
        "api newest page": api("/api/mentions", {"limit": 50}),
        "api source filter": api("/api/mentions", lambda: {"source": sources()}),
        "api watch filter (notably)": api("/api/mentions", {"watch": "notably"}),
        "api watch filter (papertrail)": api("/api/mentions", {"watch": "papertrail"}),
        "api competitor=true": api("/api/mentions", {"competitor": "true"}),
        "api since=7d": api("/api/mentions", {"since": week}),
        "api text: common word": api("/api/mentions", lambda: {"q": common()}),
        "api text: rare word": api("/api/mentions", lambda: {"q": rare()}),
        "api text: phrase": api("/api/mentions", lambda: {"q": phrases()}),
        "api text: OR": api("/api/mentions", lambda: {"q": ors()}),
        "api text: exclusion": api("/api/mentions", lambda: {"q": excl()}),
        "api text + relevance": api("/api/mentions", lambda: {"q": common(), "sort": "relevance"}),
        "api text + source + 7d": api("/api/mentions", lambda: {"q": common(), "source": sources(), "since": week}),
        "api text + relevance + source": api(
            "/api/mentions", lambda: {"q": common(), "sort": "relevance", "source": sources()}
        ),
        "api text + relevance + 7d": api("/api/mentions", lambda: {"q": common(), "sort": "relevance", "since": week}),
        "api text + relevance + negative": api(
            "/api/mentions", lambda: {"q": common(), "sort": "relevance", "sentiment": "negative"}
        ),
        "api sentiment=negative": api("/api/mentions", {"sentiment": "negative"}),
        "api keyset page 50": api("/api/mentions", {"limit": 50, "after": token}),
        "api one mention": api(f"/api/mentions/{some_id}", {}),
        "api stats by day (30d)": api("/api/stats", {"bucket": "day"}),
        "api stats by day, by source (30d)": api("/api/stats", {"bucket": "day", "group_by": "source"}),
        "api stats by day, by sentiment (30d)": api("/api/stats", {"bucket": "day", "group_by": "sentiment"}),
        "api stats by day, by watch (30d)": api("/api/stats", {"bucket": "day", "group_by": "watch"}),
        "api stats by week (365d)": api(
            "/api/stats", {"bucket": "week", "since": (end - timedelta(days=365)).isoformat()}
        ),
        "api sources": api("/api/sources", {}),
        "ui home (search + chart)": api("/", lambda: {"q": common(), "since": "30d"}),
    }
    for label, rot in (
        ("common word", common),
        ("rare word", rare),
        ("phrase", phrases),
        ("OR", ors),
        ("exclusion", excl),
    ):
        cases[f"fts {label} (Store.search)"] = (lambda r: lambda: store.search(r(), limit=50))(rot)

    results: dict[str, dict[str, float]] = {}
    for name, fn in cases.items():
        if only and only not in name:
            continue
        times, cpu = timed(fn, repeat)
        r = results[name] = {
            "p50_ms": statistics.median(times),
            "p95_ms": pct(times, 95),
            "cpu_p50_ms": statistics.median(cpu),
            "cpu_p95_ms": pct(cpu, 95),
            "runs": len(times),
        }
        print(
            f"  {name:<36} wall p50 {r['p50_ms']:7.1f} p95 {r['p95_ms']:7.1f} ms · "
            f"cpu p50 {r['cpu_p50_ms']:7.1f} p95 {r['cpu_p95_ms']:7.1f} ms  ({len(times)} runs)",
            flush=True,
        )
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--db", type=Path, default=Path("/tmp/search_bench.db"))
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--analyze", action="store_true", help="run ANALYZE before measuring")
    parser.add_argument("--only", help="measure only the queries whose name contains this")
    args = parser.parse_args(argv)

    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC · {platform.node()} · {os.cpu_count()} CPUs · "
          f"load {os.getloadavg()[0]:.2f} · python {platform.python_version()}")  # fmt: skip
    ingest: dict[str, float] = {}
    store = Store.open(args.db)
    have = store.count()
    if have != args.n:
        if have:
            store.close()
            for suffix in ("", "-wal", "-shm"):
                Path(f"{args.db}{suffix}").unlink(missing_ok=True)
            store = Store.open(args.db)
        print(f"generating {args.n:,} mentions into {args.db} …", flush=True)
        ingest = fill(store, args.n, args.seed, args.batch, end)
        print(
            f"ingest: {ingest['mentions']:,} mentions in {ingest['wall_s']:.0f} s wall; save_batch "
            f"{ingest['save_batch_per_s']:,.0f} mentions/s (batches of {args.batch}); "
            f"enrichments {ingest['save_enrichments_s']:.0f} s; generation {ingest['generate_s']:.0f} s",
            flush=True,
        )
    else:
        newest = store.search(None, limit=1).items[0].mention.created_at
        end = newest.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        print(f"reusing {args.db} ({have:,} mentions)")
    if args.analyze:  # planner statistics; storage never runs ANALYZE itself, so the default measures without
        with store.engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE")
            conn.commit()
    print(f"queries ({args.repeat} runs each after a warm-up; load {os.getloadavg()[0]:.2f}):", flush=True)
    results = measure(store, args.repeat, end, args.only)
    print(f"done; load {os.getloadavg()[0]:.2f}")
    store.close()
    if args.json:
        args.json.write_text(json.dumps({"ingest": ingest, "queries": results}, indent=2))


if __name__ == "__main__":
    main()
