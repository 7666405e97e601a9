"""Crash safety: `listener fetch` / `listener enrich` killed with SIGKILL at random points, then resumed.

A fixed seed picks the kill points; the server keeps publishing between runs, answers slowly, and
after the loop one run goes to completion: every item it ever served is stored exactly once, the
database passes `listener db check`, and (enrich) every mention has exactly one sentiment row for
the current model version.
"""

from __future__ import annotations

import random
import sqlite3
import sys
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from listener.types import Cursor, Mention
from storage import Store
from tests.reliability.crashkit import crash_loop, kill_after_progress, run
from tests.support.server import ReplayServer

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "enrich" / "models" / "sentiment" / "model.onnx"
SEED = 20261125
KILLS = 20


def test_fetch_survives_sigkill_at_random_points(replay_server: ReplayServer, tmp_path: Path) -> None:
    report = crash_loop(replay_server, tmp_path, random.Random(SEED), KILLS)
    assert report.outcomes.count("killed") >= KILLS // 2, report.outcomes  # the kills really interrupted work
    assert report.final_rc == 0, report.detail
    assert (report.duplicates, report.missing, report.unexpected) == (0, 0, 0), report
    assert report.stored == report.served
    assert report.check_rc == 0, report.detail
    assert report.runs.get("ok", 0) >= 1, report.runs  # the final fetch (exit status 0: no source failed)


def test_killed_runs_are_not_left_running(replay_server: ReplayServer, tmp_path: Path) -> None:
    report = crash_loop(replay_server, tmp_path, random.Random(SEED), 2)
    assert report.outcomes.count("killed") >= 1 and report.missing == 0
    assert report.runs.get("running", 0) == 0, report.runs


@pytest.mark.skipif(not MODEL.exists(), reason="sentiment model file not present")
def test_enrich_survives_sigkill_and_resumes(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    database = tmp_path / "enrich.db"
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    moods = ["love", "hate", "am confused by", "can't live without", "gave up on"]
    mentions = [
        Mention(
            source="s",
            kind="rss",
            native_id=str(i),
            url=None,
            title=None,
            author=f"a{i}",
            text=f"I {moods[i % 5]} the acme sync feature ({i}); it {'works' if i % 3 else 'crashes'} daily",
            created_at=t0 + timedelta(seconds=i),
        )
        for i in range(600)
    ]
    with Store.open(database) as store:
        store.save_batch("s", mentions, Cursor())
    enrich = [sys.executable, "-m", "listener.cli", "--db", str(database), "enrich", "--batch-size", "16"]
    progress: list[tuple[str, int]] = []

    def enriched() -> int:
        with closing(sqlite3.connect(database, timeout=5)) as conn:
            return int(conn.execute("SELECT count(DISTINCT mention_id) FROM enrichment").fetchone()[0])

    for _ in range(3):
        before = enriched()

        def progressed(before: int = before) -> bool:
            return enriched() > before

        outcome = kill_after_progress(enrich, progressed, rng, window=1.0)
        progress.append((outcome, enriched()))
    assert any(o == "killed" and 0 < n < len(mentions) for o, n in progress), progress  # really interrupted mid-run
    final = run(enrich, timeout=300)
    assert final.returncode == 0, final.stdout + final.stderr
    with closing(sqlite3.connect(database)) as conn:
        rows = conn.execute(
            "SELECT stage, count(DISTINCT model_version), count(*), count(DISTINCT mention_id) FROM enrichment "
            "GROUP BY stage"
        ).fetchall()
    stages = {r[0]: r[1:] for r in rows}
    assert "sentiment" in stages, rows
    for stage, (versions, total, distinct) in stages.items():
        assert versions == 1 and total == distinct == len(mentions), (stage, versions, total, distinct)
    check = run([sys.executable, "-m", "listener.cli", "--db", str(database), "db", "check"])
    assert check.returncode == 0, check.stdout + check.stderr
