"""Reliability soak: the crash-safety and fault-injection loops of tests/reliability, for N minutes.

    .venv/bin/python benchmarks/soak.py                  # 10 minutes
    .venv/bin/python benchmarks/soak.py --minutes 60 --seed 7

Alternates two kinds of rounds until the time is up:

- crash: a growing, slow Discourse + Hacker News service on 127.0.0.1; `listener fetch` subprocesses
  killed with SIGKILL at random points (`--kills` per round), then one fetch to completion. Every item
  served must be stored exactly once and `listener db check` must pass;
- faults: four sources (rss, hackernews, discourse, appstore) in one Pipeline run with a random fault
  (429, 503, timeout, truncated, HTML, oversized, redirects …) injected into one of them: it must be
  recorded as failed with a clear error while the others store their new mentions and nothing is lost.

Prints one line per round and a summary; exit status 1 if any round broke a property. Not a test.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.reliability.crashkit import crash_loop  # noqa: E402
from tests.reliability.services import KINDS  # noqa: E402
from tests.reliability.test_faults import FAULTS, check_fault, make_env  # noqa: E402
from tests.support.server import ReplayServer  # noqa: E402


def crash_round(rng: random.Random, kills: int) -> tuple[bool, str]:
    server = ReplayServer().start()
    try:
        with tempfile.TemporaryDirectory(prefix="soak-crash-") as tmp:
            report = crash_loop(server, Path(tmp), rng, kills)
    finally:
        server.stop()
    line = (
        f"killed {report.outcomes.count('killed')}/{kills}, served {report.served}, stored {report.stored}, "
        f"missing {report.missing}, duplicates {report.duplicates}, db check rc {report.check_rc}"
    )
    return report.ok, line if report.ok else f"{line}\n{report.detail}"


def fault_round(rng: random.Random, faults: int) -> tuple[bool, str]:
    done = []
    for _ in range(faults):
        kind, fault = rng.choice(KINDS), rng.choice(list(FAULTS))
        server = ReplayServer().start()
        try:
            with tempfile.TemporaryDirectory(prefix="soak-fault-") as tmp:
                env = make_env(server, Path(tmp) / "faults.db")
                try:
                    check_fault(env, kind, fault)
                finally:
                    env.http.close()
                    env.store.close()
        except AssertionError:
            return False, f"{kind} / {fault}: {traceback.format_exc(limit=3)}"
        finally:
            server.stop()
        done.append(f"{kind}/{fault}")
    return True, f"{len(done)} faults isolated ({', '.join(done[:3])}{' …' if len(done) > 3 else ''})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=20261125)
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs per crash round")
    parser.add_argument("--faults", type=int, default=10, help="faults per fault round")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)  # expected source failures are WARNINGs; crashes still show
    rng = random.Random(args.seed)
    deadline = time.monotonic() + args.minutes * 60
    rounds = {"crash": [0, 0], "faults": [0, 0]}  # passed, failed
    started = time.monotonic()
    number = 0
    while time.monotonic() < deadline:
        number += 1
        kind = "crash" if number % 2 else "faults"
        t0 = time.monotonic()
        ok, line = crash_round(rng, args.kills) if kind == "crash" else fault_round(rng, args.faults)
        rounds[kind][0 if ok else 1] += 1
        print(
            f"[{time.monotonic() - started:7.1f}s] round {number} {kind:<6} {'ok  ' if ok else 'FAIL'} "
            f"({time.monotonic() - t0:.1f}s) {line}",
            flush=True,
        )
    failed = rounds["crash"][1] + rounds["faults"][1]
    print(
        f"soak finished after {(time.monotonic() - started) / 60:.1f} min: "
        f"crash rounds {rounds['crash'][0]} ok / {rounds['crash'][1]} failed, "
        f"fault rounds {rounds['faults'][0]} ok / {rounds['faults'][1]} failed (seed {args.seed})"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
