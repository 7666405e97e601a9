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
