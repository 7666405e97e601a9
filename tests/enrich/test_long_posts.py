"""The long-post study: only unseen documents, every strategy scored against the shipped rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from enrich.sentiment import SentimentClassifier
from enrich.training import long_posts
from enrich.training.data import Example

NEG = "The screen cracked on day two, support ignored me and the refund never came."
POS = "Honestly I love it, the battery lasts all week and the camera is wonderful."


def test_long_documents_keep_only_calibration_and_test_documents(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "amazonReviewSnippets_GroundTruth.txt").write_text(
        "1_1\t-2.0\tfirst bad\n1_2\t-1.5\tsecond bad\n1_3\t-1.0\tthird bad\n"  # test document
        "2_1\t2.0\tgood\n2_2\t2.0\tgood\n2_3\t2.0\tgood\n"  # trained on: never a study document
        "3_1\t1.0\tshort\n3_2\t1.0\tdoc\n",  # calib, but too few sentences to be a document
        encoding="utf-8",
    )
    (tmp_path / "nytEditorialSnippets_GroundTruth.txt").write_text(
        "7_2\t0.1\tlater\n7_1\t0.2\tearlier\n7_3\t0.0\tlast\n", encoding="utf-8"
    )
    examples = [
        Example("icwsm_products:1_1", "x", 0, "icwsm_products", "test"),
        Example("icwsm_products:2_1", "x", 2, "icwsm_products", "train"),
        Example("icwsm_products:3_1", "x", 2, "icwsm_products", "calib"),
        Example("icwsm_news:7_1", "x", 1, "icwsm_news", "calib"),
    ]
    monkeypatch.setattr(long_posts, "ensure_vader_sdist", lambda: tmp_path)
    monkeypatch.setattr(long_posts, "load_prepared", lambda: examples)
    docs = long_posts.long_documents()
    assert set(docs) == {("icwsm_products", "1"), ("icwsm_news", "7")}
    assert [t for _, _, t in docs[("icwsm_news", "7")]] == ["earlier", "later", "last"]  # in reading order


def test_every_strategy_is_scored_and_compared_with_the_shipped_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    docs = {
        # positive overall: a short complaint, then a long happy tail the head never reaches at 64 tokens
        ("icwsm_products", "1"): [(1, -1.0, NEG), *[(i, 2.5, POS) for i in range(2, 9)]],
        ("icwsm_products", "2"): [(i, -2.5, NEG) for i in range(1, 9)],
        ("icwsm_news", "3"): [(1, 1.0, "Short."), (2, 1.0, "Also short."), (3, 1.0, "Done.")],  # under any budget
    }
    monkeypatch.setattr(long_posts, "long_documents", lambda: docs)
    clf = SentimentClassifier()
    study = long_posts.truncation_study(clf, budgets=(64,))
    res = study["budget_64"]
    assert study["shipped_head_frac"] == clf.head_frac
    assert res["n_docs"] == 2 and res["n_by_domain"] == {"icwsm_products": 2, "icwsm_news": 0}
    assert set(res["strategies"]) == {
        "head_only",
        "head_tail_50_50",
        "head_tail_25_75",
        "first_last_sentences",
        "chunk_mean",
    }
    shipped = "head_only" if clf.head_frac == 1.0 else "head_tail_50_50"
    assert res["strategies"][shipped]["right_where_shipped_wrong"] == 0
    assert res["strategies"][shipped]["wrong_where_shipped_right"] == 0
    assert all(m["n"] == 2 for m in res["strategies"].values())
    # pooling every window reads the happy tail: right on both documents
    assert res["strategies"]["chunk_mean"]["accuracy"] == 1.0
    lines = long_posts.render(study)
    assert any(line.startswith("- budget_64: 2 documents") for line in lines)
    assert sum(line.startswith("  - ") for line in lines) == 5
