"""Ingest throughput of `Store.save_batch` on SQLite and on a throwaway PostgreSQL cluster.

    .venv/bin/python benchmarks/ingest_bench.py                    # both backends, 20k mentions, 1k batches
    .venv/bin/python benchmarks/ingest_bench.py --backend sqlite --mentions 50000 --json
    .venv/bin/python benchmarks/ingest_bench.py --prefill 300000   # into a store that already holds 300k

Synthetic mentions (storage.bench.synthetic_mention: 60-word text, title, author, watch match, extra)
are saved in batches, each batch with its cursor in one transaction, as the pipeline does. Reported:
new mentions/s by wall clock and by this process's CPU time (on a busy machine CPU time is the honest
figure; for PostgreSQL the server's own CPU is not in it), best of `--rounds`, plus a re-save of the
same batches (all duplicates). PostgreSQL runs in a temporary cluster (initdb + pg_ctl on a free port,
fsync off, as the postgres user when run as root), the same way tests/support/postgres.py starts one;
it is skipped with a note when the server binaries are absent. `--prefill N` first stores N other
mentions (untimed) in every round's store: inserts into large random-id and full-text indexes cost
more than into an empty store. Target: ≥ 20,000 mentions/s (SQLite).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from listener.types import Mention  # noqa: E402
from storage import Store  # noqa: E402
from storage.bench import synthetic_mention, time_saves  # noqa: E402

TARGET = 20_000
PREFILL_IDS = 100_000_000
"""Prefilled mentions are numbered from here, clear of the timed ones."""


def _prefill(store: Store, count: int, batch: int) -> None:
    for start in range(0, count, batch):
        size = min(batch, count - start)
        store.save_batch("bench", [synthetic_mention(PREFILL_IDS + start + i) for i in range(size)], None)


def _rounds(
    open_store: Callable[[], Store], data: list[list[Mention]], rounds: int, prefill: int = 0
) -> dict[str, float]:
    total = sum(len(b) for b in data)
    best: dict[str, float] = {}
    for _ in range(rounds):
        store = open_store()
        try:
            _prefill(store, prefill, len(data[0]) if data else 1000)
            time_saves(store, data, best)
            assert store.count(include_deleted=True) == total + prefill
        finally:
            store.close()
    return best


@contextmanager
def sqlite_target() -> Iterator[Callable[[], Store]]:
    with tempfile.TemporaryDirectory() as tmp:
        counter = iter(range(1_000_000))
        yield lambda: Store.open(Path(tmp) / f"bench{next(counter)}.db")


@contextmanager
def postgres_target() -> Iterator[Callable[[], Store] | None]:
    from tests.support.postgres import PgCluster, _pg_bindir

    bindir = _pg_bindir()
    if bindir is None or not (bindir / "pg_ctl").exists():
        yield None
        return
    cluster = PgCluster(bindir)
    cluster.start()
    try:
        yield lambda: Store.open(cluster.new_database())
    finally:
        cluster.stop()


def run(backends: list[str], mentions: int, batch: int, rounds: int, prefill: int = 0) -> dict[str, object]:
    data = [[synthetic_mention(b + i) for i in range(min(batch, mentions - b))] for b in range(0, mentions, batch)]
    report: dict[str, object] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.node()} · {platform.processor() or platform.machine()} · {_cpu_model()} · "
        f"Python {platform.python_version()} · SQLite {_sqlite_version()}",
        "mentions": mentions,
        "batch": batch,
        "rounds": rounds,
        "prefill": prefill,
    }
    for backend in backends:
        target = sqlite_target() if backend == "sqlite" else postgres_target()
        with target as open_store:
            if open_store is None:
                report[backend] = "skipped: PostgreSQL server binaries (initdb, pg_ctl) not installed"
                continue
            report[backend] = _rounds(open_store, data, rounds, prefill)
    return report


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                import os

                return f"{line.split(':', 1)[1].strip()} ×{os.cpu_count()}"
    except OSError:
        pass
    return "unknown CPU"


def _sqlite_version() -> str:
    import sqlite3

    return sqlite3.sqlite_version


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres", "all"], default="all")
    parser.add_argument("--mentions", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prefill", type=int, default=0, help="mentions stored (untimed) before each round")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    backends = ["sqlite", "postgres"] if args.backend == "all" else [args.backend]
    report = run(backends, args.mentions, args.batch, args.rounds, args.prefill)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{report['date']} — {report['machine']}")
        into = f", into stores holding {args.prefill:,} mentions" if args.prefill else ""
        print(f"{args.mentions} mentions in batches of {args.batch}, best of {args.rounds}{into}")
        for backend in backends:
            figures = report[backend]
            if not isinstance(figures, dict):
                print(f"  {backend:<9} {figures}")
                continue
            for key, value in figures.items():
                print(f"  {backend:<9} {key:<24} {value:>10,.0f}")
    sqlite = report.get("sqlite")
    if isinstance(sqlite, dict) and not args.prefill and sqlite["new_per_s_cpu"] < TARGET:  # target: empty store
        print(f"below the {TARGET:,} mentions/s target (CPU time)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
