"""`listener bench` measures end to end with storage: the sink really writes one enrichment per post."""

from __future__ import annotations

import pytest

from enrich.sentiment import MODEL_DIR
from listener.bench import CORPUS, run_bench

pytestmark = pytest.mark.skipif(
    not (MODEL_DIR / "model.onnx").exists() or not CORPUS.exists(), reason="needs the shipped model and the corpora"
)


def test_end_to_end_includes_storing_every_result(monkeypatch: pytest.MonkeyPatch) -> None:
    stored: list[int] = []
    from storage import Store

    save = Store.save_enrichments

    def counting(self: Store, items: list) -> int:  # type: ignore[type-arg]
        stored.append(len(items))
        return save(self, items)

    monkeypatch.setattr(Store, "save_enrichments", counting)
    result = run_bench(n=40, batch_sizes=(8,), baseline=False)
    e2e = result["ours"]["end_to_end_batch32"]
    assert e2e["store"] is True and e2e["posts_per_s"] > 0
    assert sum(stored) >= 40 and result["baseline"] == {"available": False, "reason": "disabled"}


def test_insight_bench_through_the_cli_reports_every_stage_and_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from typer.testing import CliRunner

    from listener import bench_insight
    from listener.cli import app

    real = bench_insight.run_insight_bench
    monkeypatch.setattr(bench_insight, "run_insight_bench", lambda n: real(n=n, batch=16, cluster=300))
    result = CliRunner().invoke(app, ["bench", "--insight", "--n", "40", "--json"])
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    assert list(found["per_stage"]) == ["embedding", "topics", "intent", "journey", "language", "duplicates"]
    assert found["n"] == 40 and found["insight_per_batch_per_s"] > 0 and found["with_sentiment_per_batch_per_s"] > 0
    assert found["enrich_pending_sqlite_per_s"] > 0 and found["cluster"]["vectors"] == 300  # enrich_pending did all 40
    assert "mentions/s" in bench_insight.format_insight(found)
