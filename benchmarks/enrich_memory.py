"""Memory and interruption of the real `listener enrich` over N stored mentions (issue #12).

    python benchmarks/enrich_memory.py --n 100000 --db /tmp/enrich100k.db --json enrich100k.json
    python benchmarks/enrich_memory.py --n 20000 --db /tmp/enrich20k.db --no-interrupt

The store (`--db`) holds N mentions from `benchmarks/search_bench.py`'s generator, saved through
`Store.save_batch` without any enrichment; an existing --db holding exactly N un-enriched mentions is
reused. Each run enriches a fresh copy of it (`<db>.work.db`, SQLite backup API), so the pristine store
can be measured again.

`listener enrich --db <copy>` runs as a subprocess with every default stage. Every `--interval` seconds
its VmRSS/VmHWM (/proc/<pid>/status) and the count of sentiment rows at the current model version are
sampled. Unless --no-interrupt, SIGTERM goes out once half the mentions are enriched; the process must
finish its batch and exit 0, then a second `listener enrich` finishes the job. Reported: peak RSS per
phase, RSS at 10/50/90 % of progress and its slope (MB per 10 k mentions, constant memory ≈ 0),
mentions/s, SIGTERM-to-exit time, and after the resume: every live mention holds one row per stage at
the current version, and how many rows/batches written before the SIGTERM were written again (their
created_at changed). Speed and memory are measured here, never asserted in tests.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.search_bench import generate  # noqa: E402
from enrich.base import ENRICH_BATCH  # noqa: E402
from listener.config import Config  # noqa: E402
from listener.types import Cursor  # noqa: E402
from storage import Store  # noqa: E402

Stages = list[tuple[str, str]]  # (stage, model_version) as the CLI will write them


@dataclass
class Sample:
    t: float  # seconds since the phase started
    rss_kb: int
    hwm_kb: int
    done: int  # mentions holding the lead stage at its current version (whole store)


@dataclass
class Phase:
    name: str
    returncode: int | None = None
    wall_s: float = 0.0
    mentions: int = 0
    sigterm_to_exit_s: float | None = None
    killed: bool = False
    message: str = ""
    samples: list[Sample] = field(default_factory=list)

    @property
    def peak_rss_mb(self) -> float:
        return max((s.hwm_kb for s in self.samples), default=0) / 1024


def current_stages() -> Stages:
    """The default stages' (name, version), as `listener enrich` without a config builds them (models stay unloaded)."""
    from listener.pipeline import default_stages

    return [(s.name, s.version) for s in default_stages(Config(path=None), None)]


def build_store(db: Path, n: int, seed: int, lead: tuple[str, str]) -> dict[str, Any]:
    """Create `db` with n generated mentions, or reuse it when it holds exactly n still-unenriched ones."""
    if db.exists():
        with Store.open(db) as store:
            held, pending = store.count(), store.count_unenriched(*lead)
        if held != n or pending != n:
            raise SystemExit(f"{db} holds {held} mentions ({pending} unenriched), not {n} fresh: pass another --db")
        return {"reused": True, "mentions": n}
    t0 = time.perf_counter()
    with Store.open(db) as store:
        end = datetime.now(UTC).replace(microsecond=0)
        for source, mentions, _bench_enrichments in generate(n, seed, 1000, end):
            store.save_batch(source, mentions, Cursor(last_id=mentions[-1].native_id))
        held = store.count()
    return {"reused": False, "mentions": held, "build_s": round(time.perf_counter() - t0, 1)}


def working_copy(pristine: Path, work: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{work}{suffix}").unlink(missing_ok=True)
    with closing(sqlite3.connect(pristine)) as src, closing(sqlite3.connect(work)) as dst:
        src.backup(dst)


def _reader(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)


def count_done(db: Path, stage: str, version: str) -> int:
    with closing(_reader(db)) as conn:
        row = conn.execute(
            "SELECT count(*) FROM enrichment WHERE stage = ? AND model_version = ?", (stage, version)
        ).fetchone()
    return int(row[0]) if row else 0


def batches_written(db: Path, stages: Stages) -> dict[str, dict[str, int]]:
    """stage -> created_at -> rows: one created_at per saved batch (save_enrichments stamps a batch once)."""
    out: dict[str, dict[str, int]] = {}
    with closing(_reader(db)) as conn:
        for stage, version in stages:
            rows = conn.execute(
                "SELECT created_at, count(*) FROM enrichment WHERE stage = ? AND model_version = ? GROUP BY created_at",
                (stage, version),
            )
            out[stage] = {str(at): int(k) for at, k in rows}
    return out


def read_rss(pid: int) -> tuple[int, int] | None:
    """(VmRSS, VmHWM) in kB, None once the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    found: dict[str, str] = dict(re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", text, re.M))
    if "VmRSS" not in found:
        return None  # zombie: exited, not reaped yet
    return int(found["VmRSS"]), int(found.get("VmHWM", found["VmRSS"]))


def cli_command() -> list[str]:
    entry = Path(sys.executable).parent / "listener"
    return [str(entry)] if entry.exists() else [sys.executable, "-m", "listener.cli"]


def run_phase(
    name: str,
    db: Path,
    lead: tuple[str, str],
    *,
    batch_size: int,
    stop_at: int | None,
    interval: float,
    grace_s: float = 300.0,
) -> Phase:
    """One `listener enrich` subprocess, sampled until it exits; SIGTERM once `stop_at` mentions are done."""
    phase = Phase(name)
    before = count_done(db, *lead)
    env = {k: v for k, v in os.environ.items() if k not in ("LISTENER_CONFIG", "LISTENER_DB")}
    env["COLUMNS"] = "1000"  # rich would wrap the final summary line at 80
    with tempfile.TemporaryDirectory() as cwd, tempfile.TemporaryFile("w+") as out:
        cmd = [*cli_command(), "--db", str(db.resolve()), "enrich", "--batch-size", str(batch_size)]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        sent: float | None = None
        while True:
            rss = read_rss(proc.pid)
            if rss is not None:
                now = time.perf_counter()
                phase.samples.append(Sample(round(now - t0, 2), rss[0], rss[1], count_done(db, *lead)))
                if stop_at is not None and sent is None and phase.samples[-1].done >= stop_at:
                    proc.send_signal(signal.SIGTERM)
                    sent = now
            if proc.poll() is not None:
                break
            if sent is not None and time.perf_counter() - sent > grace_s:
                proc.kill()
                phase.killed = True
            time.sleep(interval)
        end = time.perf_counter()
        phase.returncode = proc.wait()
        phase.wall_s = round(end - t0, 2)
        phase.sigterm_to_exit_s = None if sent is None else round(end - sent, 2)
        out.seek(0)
        lines = [line.strip() for line in re.split(r"[\r\n]+", out.read()) if line.strip()]
        phase.message = lines[-1] if lines else ""
    phase.mentions = count_done(db, *lead) - before
    return phase


def rss_at_progress(phases: list[Phase], total: int, points: tuple[int, ...] = (10, 50, 90)) -> dict[str, Any]:
    """VmRSS of the first sample at or past each share of the whole job (which phase it fell in)."""
    out: dict[str, Any] = {}
    for pct in points:
        for phase in phases:
            hit = next((s for s in phase.samples if s.done >= total * pct / 100), None)
            if hit is not None:
                out[f"{pct}%"] = {"rss_mb": round(hit.rss_kb / 1024, 1), "phase": phase.name, "t_s": hit.t}
                break
    return out


def rss_slope(phase: Phase) -> float | None:
    """Least-squares VmRSS growth in MB per 10 k mentions, over samples after the phase's first 10 % of its work."""
    if not phase.samples or phase.mentions <= 0:
        return None
    start, final = phase.samples[0].done, phase.samples[-1].done
    working = [s for s in phase.samples if s.done < final]  # from the last commit on it may be shutting down
    pts = [(s.done, s.rss_kb / 1024) for s in working if s.done - start >= 0.1 * phase.mentions]
    if len(pts) < 3 or pts[-1][0] == pts[0][0]:
        return None
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    var = sum((x - mx) ** 2 for x, _ in pts)
    return round(sum((x - mx) * (y - my) for x, y in pts) / var * 10_000, 2)


def working_rate(phase: Phase) -> tuple[float | None, float | None]:
    """(seconds until the first batch was committed, mentions/s from then to the last commit seen)."""
    start, final = (phase.samples[0].done, phase.samples[-1].done) if phase.samples else (0, 0)
    first = next((s for s in phase.samples if s.done > start), None)
    last = next((s for s in phase.samples if s.done == final), None)
    if first is None or last is None:
        return None, None
    rate = (last.done - first.done) / (last.t - first.t) if last.t > first.t else None
    return first.t, None if rate is None else round(rate, 1)


def check_store(db: Path, stages: Stages, at_stop: dict[str, dict[str, int]] | None) -> dict[str, Any]:
    """Every live mention holds one row per stage at its current version; rows from before the stop kept theirs."""
    with Store.open(db) as store:
        live = store.count()
        missing = {stage: store.count_unenriched(stage, version) for stage, version in stages}
    rows = {stage: count_done(db, stage, version) for stage, version in stages}
    result: dict[str, Any] = {
        "live_mentions": live,
        "rows_per_stage": rows,
        "missing": sum(missing.values()),
        "complete": all(v == 0 for v in missing.values()) and all(v == live for v in rows.values()),
    }
    if at_stop is not None:
        after = batches_written(db, stages)
        redone_rows = 0
        redone_batches: set[str] = set()
        for stage, batches in at_stop.items():
            for at, count in batches.items():
                kept = after[stage].get(at, 0)
                if kept < count:
                    redone_rows += count - kept
                    redone_batches.add(at)
        sizes = {stage: sum(b.values()) for stage, b in at_stop.items()}
        result.update(
            rows_at_stop=sizes,
            batches_at_stop=len(next(iter(at_stop.values()), {})),
            # one transaction per batch: at the stop every stage held the same number of rows
            stages_consistent_at_stop=len(set(sizes.values())) == 1,
            redone_rows=redone_rows,
            redone_batches=len(redone_batches),
        )
    return result


def run(
    n: int, db: Path, *, batch_size: int = 256, interrupt: bool = True, interval: float = 0.5, seed: int = 7
) -> dict[str, Any]:
    stages = current_stages()
    lead = stages[0]
    store_info = build_store(db, n, seed, lead)
    work = db.with_name(db.name + ".work.db")
    working_copy(db, work)
    phases: list[Phase] = []
    at_stop = None
    if interrupt:
        first = run_phase("until SIGTERM", work, lead, batch_size=batch_size, stop_at=n // 2, interval=interval)
        phases.append(first)
        at_stop = batches_written(work, stages)
        phases.append(run_phase("resume", work, lead, batch_size=batch_size, stop_at=None, interval=interval))
    else:
        phases.append(run_phase("whole", work, lead, batch_size=batch_size, stop_at=None, interval=interval))
    check = check_store(work, stages, at_stop)
    wall = sum(p.wall_s for p in phases)
    versions = ", ".join(v for _, v in stages)
    return {
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {"cpus": os.cpu_count(), "load_avg": os.getloadavg(), "python": platform.python_version()},
        "n": n,
        "batch_size": batch_size,
        "store": store_info,
        "stages": stages,
        "phases": [
            {
                "name": p.name,
                "returncode": p.returncode,
                "clean_exit": p.returncode == 0 and not p.killed,
                "versions_match_cli": versions in p.message,
                "message": p.message,
                "peak_rss_mb": round(p.peak_rss_mb, 1),
                "wall_s": p.wall_s,
                "mentions": p.mentions,
                "mentions_per_s": round(p.mentions / p.wall_s, 1) if p.wall_s else None,
                "first_batch_s": working_rate(p)[0],
                "working_mentions_per_s": working_rate(p)[1],
                "rss_slope_mb_per_10k": rss_slope(p),
                "sigterm_to_exit_s": p.sigterm_to_exit_s,
                "samples": [asdict(s) for s in p.samples],
            }
            for p in phases
        ],
        "peak_rss_mb": round(max(p.peak_rss_mb for p in phases), 1),
        "rss_at_progress": rss_at_progress(phases, n),
        "mentions_per_s_wall": round(n / wall, 1) if wall else None,
        "check": check,
    }


def format_result(r: dict[str, Any]) -> str:
    lines = [
        f"listener enrich over {r['n']:,} mentions, batch {r['batch_size']}, {r['when']}, "
        f"load {r['machine']['load_avg'][0]:.1f} on {r['machine']['cpus']} CPUs",
        f"{'phase':<14} {'exit':>4} {'peak RSS MB':>11} {'MB/10k':>7} {'mentions':>9} {'wall s':>8} "
        f"{'ment/s':>7} {'1st batch s':>11} {'working/s':>9} {'TERM->exit s':>12}",
    ]
    for p in r["phases"]:
        term = "" if p["sigterm_to_exit_s"] is None else f"{p['sigterm_to_exit_s']:.1f}"
        slope = "" if p["rss_slope_mb_per_10k"] is None else f"{p['rss_slope_mb_per_10k']:+.1f}"
        lines.append(
            f"{p['name']:<14} {p['returncode']!s:>4} {p['peak_rss_mb']:>11.0f} {slope:>7} {p['mentions']:>9,} "
            f"{p['wall_s']:>8.1f} {p['mentions_per_s'] or 0:>7.1f} {p['first_batch_s'] or 0:>11.1f} "
            f"{p['working_mentions_per_s'] or 0:>9.1f} {term:>12}"
        )
    at = ", ".join(f"{k} {v['rss_mb']:.0f} MB ({v['phase']})" for k, v in r["rss_at_progress"].items())
    c = r["check"]
    lines += [
        f"RSS at progress: {at}",
        f"overall {r['mentions_per_s_wall']} mentions/s wall; peak RSS {r['peak_rss_mb']:.0f} MB (target < 600)",
        f"after: {c['live_mentions']:,} live mentions, missing {c['missing']}, complete {c['complete']}",
    ]
    if "redone_rows" in c:
        lines.append(
            f"at the stop: {c['batches_at_stop']} batches, rows per stage equal {c['stages_consistent_at_stop']}; "
            f"redone after resume: {c['redone_rows']} rows in {c['redone_batches']} batches"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--n", type=int, default=100_000, help="mentions in the store")
    parser.add_argument("--db", type=Path, default=Path("/tmp/enrich_memory.db"), help="pristine store (reused)")
    parser.add_argument("--batch-size", type=int, default=ENRICH_BATCH, help="`listener enrich` --batch-size")
    parser.add_argument("--no-interrupt", action="store_true", help="one uninterrupted run instead of stop + resume")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between RSS/progress samples")
    parser.add_argument("--json", type=Path, help="also write the full result (with every sample) here")
    args = parser.parse_args(argv)
    result = run(args.n, args.db, batch_size=args.batch_size, interrupt=not args.no_interrupt, interval=args.interval)
    print(format_result(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
    ok = result["check"]["complete"] and all(p["clean_exit"] for p in result["phases"])
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
