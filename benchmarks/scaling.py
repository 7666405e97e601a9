"""Scale-out curve: how fast 1, 2, 3 `listener daemon` worker processes sharing one PostgreSQL store fetch a backlog.

    .venv/bin/python benchmarks/scaling.py                           # 60 sources × 160 hits, 100 ms per request
    .venv/bin/python benchmarks/scaling.py --sources 100 --latency 0.25 --processes 1 2 3 4

For each process count: a fresh database on a throwaway PostgreSQL cluster, N scale-out daemons
(tests/reliability/multiworker_kit.py: the production PgDaemon with a light enrichment stage), and a
127.0.0.1 Hacker-News-like service answering every page after `--latency` seconds, like a remote API.
Each source is due once (every = 1h); the clock runs from the first request to the last mention
stored. Reports sources/min and mentions/s per process count and the speed-up over one process
measured in the same run. Not a test: no asserts.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402

from storage import Store, jobqueue  # noqa: E402
from tests.reliability.multiworker_kit import PAGE, HnService, spawn, write_config  # noqa: E402
from tests.support.postgres import PgCluster, _pg_bindir  # noqa: E402
from tests.support.server import ReplayServer  # noqa: E402


def measure(cluster: PgCluster, processes: int, args: argparse.Namespace, work: Path) -> dict[str, float]:
    server = ReplayServer().start()
    try:
        service = HnService(server, sources=args.sources, total=args.hits, start=args.hits, delay=args.latency)
        url = cluster.new_database()
        with Store.open(url) as store:
            jobqueue.apply_schema(store)
        config = write_config(work / f"scale{processes}.toml", url, service.source_toml(every="1h"),
                              workers=args.concurrency, stalled_after="30s")
        expected = args.sources * args.hits
        daemons = [spawn(config, work / f"scale{processes}-{i}.log") for i in range(processes)]
        store = Store.open(url, upgrade=False)
        try:
            deadline = time.monotonic() + args.timeout
            stored = 0
            while time.monotonic() < deadline:
                with store.engine.connect() as conn:
                    stored = int(conn.execute(sa.text("SELECT count(*) FROM mention")).scalar_one())
                if stored >= expected:
                    break
                time.sleep(0.05)
            done = time.monotonic()
        finally:
            store.close()
            for d in daemons:
                d.send_signal(signal.SIGTERM)
            for d in daemons:
                d.wait(30)
        if stored < expected:
            raise SystemExit(f"{processes} process(es): only {stored} of {expected} mentions after {args.timeout}s")
        seconds = done - server.requests[0].at
        return {"seconds": seconds, "sources_per_min": args.sources / seconds * 60,
                "mentions_per_s": expected / seconds, "requests": len(server.requests)}
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sources", type=int, default=60)
    parser.add_argument("--hits", type=int, default=160, help=f"hits per source ({PAGE} per page)")
    parser.add_argument("--latency", type=float, default=0.1, help="seconds the service takes per request")
    parser.add_argument("--concurrency", type=int, default=4, help="jobs at a time per process ([daemon] workers)")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args(argv)
    bindir = _pg_bindir()
    if bindir is None:
        raise SystemExit("PostgreSQL server binaries (initdb, pg_ctl) not found")
    cluster = PgCluster(bindir)
    cluster.start()
    pages = -(-args.hits // PAGE)
    print(f"{args.sources} sources × {args.hits} hits ({pages} pages), {args.latency * 1000:.0f} ms per request, "
          f"{args.concurrency} jobs at a time per process")
    results: dict[int, dict[str, float]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="listener-scaling-") as tmp:
            for n in args.processes:
                results[n] = r = measure(cluster, n, args, Path(tmp))
                base = results[args.processes[0]]["seconds"]
                print(f"{n} process(es): {r['seconds']:6.1f} s  {r['sources_per_min']:7.1f} sources/min  "
                      f"{r['mentions_per_s']:7.1f} mentions/s  ×{base / r['seconds']:.2f} vs {args.processes[0]}  "
                      f"({r['requests']:.0f} requests)", flush=True)
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
