"""benchmarks/enrich_memory.py stays runnable: a tiny store, a real `listener enrich` stopped by SIGTERM, resumed.

Only the benchmark's own bookkeeping and the correctness it reports are asserted; its speed and memory
figures are measured by the benchmark, never here.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from benchmarks.enrich_memory import batches_written, check_store, current_stages, format_result, run
from enrich.base import Enrichment
from enrich.sentiment import MODEL_DIR
from storage import Store

pytestmark = pytest.mark.skipif(not (MODEL_DIR / "model.onnx").exists(), reason="needs the shipped model")


def test_interrupted_enrich_resumes_with_nothing_missing_or_redone(tmp_path: Path) -> None:
    n = 300
    result = run(n, tmp_path / "store.db", batch_size=20, interval=0.1)

    first, resume = result["phases"]
    assert first["sigterm_to_exit_s"] is not None and first["clean_exit"] and "stopped early" in first["message"]
    assert 0 < first["mentions"] < n and first["mentions"] % 20 == 0  # stopped on a batch boundary
    assert resume["clean_exit"] and "(done)" in resume["message"] and resume["sigterm_to_exit_s"] is None
    assert first["mentions"] + resume["mentions"] == n
    # the CLI counts mentions (each goes through one batch for all its stages), not stage-mention pairs
    assert f"enriched {first['mentions']} of {n} pending" in first["message"], first["message"]
    assert f"of {n - first['mentions']} pending" in resume["message"], resume["message"]
    assert all(p["versions_match_cli"] and p["peak_rss_mb"] > 0 and p["samples"] for p in result["phases"])

    check = result["check"]
    stages = [name for name, _ in current_stages()]
    assert check["complete"] and check["missing"] == 0 and check["live_mentions"] == n
    assert check["rows_per_stage"] == {name: n for name in stages}
    assert check["rows_at_stop"] == {name: first["mentions"] for name in stages}
    assert check["stages_consistent_at_stop"] and check["batches_at_stop"] == first["mentions"] // 20
    assert check["redone_rows"] == 0 and check["redone_batches"] == 0
    assert set(result["rss_at_progress"]) == {"10%", "50%", "90%"}
    assert "redone after resume: 0 rows" in format_result(result)

    # The redo count is real: writing the first batch's results again (what a redo does) is counted.
    work = tmp_path / "store.db.work.db"
    at_stop = batches_written(work, current_stages())
    first_batch = min(at_stop["sentiment"])
    with closing(sqlite3.connect(work)) as conn:
        ids = [r[0] for r in conn.execute("SELECT mention_id FROM enrichment WHERE created_at = ?", (first_batch,))]
    ids = sorted(set(ids))
    assert len(ids) == 20
    with Store.open(work) as store:
        again_rows = [
            Enrichment(mid, stage, version, data[stage])
            for stage, version in current_stages()
            for mid, data in store.enrichments_for(ids, stage, version).items()
        ]
        store.save_enrichments(again_rows)
    recheck = check_store(work, current_stages(), at_stop)
    assert recheck["redone_rows"] == 20 * len(stages) and recheck["redone_batches"] == 1 and recheck["complete"]

    # The pristine store is reused as is, and a second measurement starts from scratch again.
    again = run(n, tmp_path / "store.db", batch_size=150, interrupt=False, interval=0.1)
    assert again["store"]["reused"] and again["check"]["complete"]
    assert [p["mentions"] for p in again["phases"]] == [n]


def test_refuses_a_store_that_is_not_n_fresh_mentions(tmp_path: Path) -> None:
    from benchmarks.enrich_memory import build_store

    lead = current_stages()[0]
    build_store(tmp_path / "s.db", 5, seed=1, lead=lead)
    with pytest.raises(SystemExit, match="holds 5 mentions"):
        build_store(tmp_path / "s.db", 6, seed=1, lead=lead)
