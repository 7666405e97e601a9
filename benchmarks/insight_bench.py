"""Throughput of the insight stages (one shared encoder pass) and of emerging-topic clustering.

    python benchmarks/insight_bench.py                   # 2,000 real-text mentions + 100k-vector clustering
    python benchmarks/insight_bench.py --n 5000 --json out.json

The same measurement as `listener bench --insight` (listener/bench_insight.py, which says what is
timed); this script only adds --batch, --cluster, --no-store and a JSON file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from enrich.base import ENRICH_BATCH  # noqa: E402
from listener.bench_insight import format_insight, run_insight_bench  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="mentions to enrich")
    ap.add_argument("--batch", type=int, default=ENRICH_BATCH)
    ap.add_argument("--cluster", type=int, default=100_000, help="vectors to cluster (0 = skip)")
    ap.add_argument("--no-store", action="store_true", help="skip enrich_pending on a temporary SQLite store")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    result = run_insight_bench(n=args.n, batch=args.batch, cluster=args.cluster, store=not args.no_store)
    print(format_insight(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
