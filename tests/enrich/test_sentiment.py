"""The committed ONNX sentiment model: behaviour on clear cases, bad input, batching and the stage.

These tests fail (not skip) when the model files are missing: the model is part of the product.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from enrich.onnx_model import length_groups, spread_groups
from enrich.sentiment import MODEL_DIR, MODEL_VERSION, SentimentClassifier, SentimentResult, SentimentStage
from enrich.textprep import normalise

LABELS = {"negative", "neutral", "positive"}
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def clf() -> SentimentClassifier:
    assert (MODEL_DIR / "model.onnx").exists(), "enrich/models/sentiment/model.onnx is missing"
    assert (MODEL_DIR / "tokenizer.json").exists(), "enrich/models/sentiment/tokenizer.json is missing"
    return SentimentClassifier()


def _check(r: SentimentResult) -> None:
    if r.label is None:
        assert r.reason and r.score is None and r.scores == {}
    else:
        assert r.label in LABELS and r.reason is None
        assert set(r.scores) == LABELS
        assert math.isclose(sum(r.scores.values()), 1.0, abs_tol=1e-4)
        assert r.score == r.scores[r.label] == max(r.scores.values())


def test_model_files_and_card() -> None:
    card = json.loads((MODEL_DIR / "model_card.json").read_text())
    assert card["version"] == MODEL_VERSION and MODEL_VERSION.startswith("sentiment-")
    assert card["labels"] == ["negative", "neutral", "positive"]
    assert card["temperature"] > 0 and card["max_length"] == 128
    assert (MODEL_DIR / "model.onnx").stat().st_size < 30 * 2**20


def test_a_long_post_is_read_by_the_rule_its_card_names(clf: SentimentClassifier) -> None:
    card = json.loads((MODEL_DIR / "model_card.json").read_text())
    head = "the battery died after one day and support never answered. " * 10
    tail = "update: a replacement arrived and it works perfectly now, thanks! " * 10
    (ids,) = clf.encode([head + tail])
    full = clf.model.tokenizer.encode(head + tail).ids
    n_head = round((card["max_length"] - 2) * card["truncation_head_frac"])
    assert len(ids) == card["max_length"] and ids[: n_head + 1] == full[: n_head + 1]
    assert ids[n_head + 1 : -1] == full[len(full) - (card["max_length"] - 2 - n_head) - 1 : -1]
    if card["truncation_head_frac"] == 1.0:  # the shipped rule (EVALUATION.md): only the start is read
        assert clf.classify([head + tail])[0].label == clf.classify([head * 3])[0].label == "negative"


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("I absolutely love this app, best update ever!", "positive"),
        ("Thank you so much, the support team was amazing and fixed it in minutes", "positive"),
        ("This is the worst customer service I have ever had. Never again.", "negative"),
        ("The app keeps crashing and I lost all my data, terrible", "negative"),
        ("The store opens at 9am on Monday.", "neutral"),
        ("Version 2.3 was released today with a new settings page.", "neutral"),
    ],
)
def test_clear_examples(clf: SentimentClassifier, text: str, label: str) -> None:
    (r,) = clf.classify([text])
    _check(r)
    assert r.label == label, (text, r)


def test_bad_inputs_never_crash(clf: SentimentClassifier) -> None:
    inputs: list[str | bytes] = [
        "",
        "   \n\t ",
        "!!! ??? 123",
        "😍😍😍",
        "😡",
        "great " * 20_000 + "but terrible ending",
        "bad \ud83d surrogate",
        b"caf\xc3\xa9 is \xff\xfe lovely".decode("utf-8", errors="surrogateescape"),
        b"invalid \xff bytes but happy",
        "Привет, this 服务 is great مرحبا",
        "\x00\x01",
        "@user http",
    ]
    results = clf.classify(inputs)
    assert len(results) == len(inputs)
    for r in results:
        _check(r)
    assert results[0].label is None and results[0].reason == "empty text"
    assert results[1].label is None and results[1].reason == "empty text"
    assert results[2].label is None and results[2].reason == "no letters or emoji"
    assert results[3].label == "positive" and results[4].label == "negative"
    assert all(r.label is not None for r in results[5:10])
    assert results[11].label is None


def test_non_text_inputs_get_a_reason(clf: SentimentClassifier) -> None:
    results = clf.classify([None, 42])  # type: ignore[list-item]
    assert [r.reason for r in results] == ["not text", "not text"]


def test_batch_equals_single_and_is_deterministic(clf: SentimentClassifier) -> None:
    texts = ["so happy with this", "meh, it's ok I guess", "awful, refund please", "short", "a " * 300 + "long one"]
    batch = clf.classify(texts, batch_size=4)
    singles = [clf.classify([t])[0] for t in texts]
    for b, s in zip(batch, singles, strict=True):
        assert b.label == s.label
        for k in LABELS:
            assert abs(b.scores[k] - s.scores[k]) < 1e-3
    assert clf.classify(texts, batch_size=4) == batch
    assert clf.classify([]) == []


def test_length_groups_cover_every_index_once_with_bounded_padding() -> None:
    lengths = [9, 40, 12, 11, 60, 10, 38, 9, 13, 41, 12, 58]
    groups = length_groups(lengths, max_batch=4, max_padding=0.15)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    widths = [max(lengths[i] for i in g) for g in groups]
    assert widths == sorted(widths) and all(len(g) <= 4 for g in groups)
    for g in groups:
        assert max(lengths[i] for i in g) * len(g) <= 1.15 * sum(lengths[i] for i in g)
    assert length_groups(lengths, max_batch=100, max_padding=10.0) == [sorted(range(12), key=lambda i: lengths[i])]
    assert length_groups([], 8) == []


def test_shipped_model_is_batch_invariant_so_it_batches(clf: SentimentClassifier) -> None:
    card = json.loads((MODEL_DIR / "model_card.json").read_text())
    assert card.get("batch_invariant") is True and clf.per_row is False
    texts = [normalise(t) for t in ("ok", "love it " * 20, "worst update ever, app crashes", "meh", "fine " * 40)]
    batched = clf.logits(texts, batch_size=32)
    alone = SentimentClassifier(per_row=True).logits(texts)
    assert np.abs(batched - alone).max() < 1e-4


def test_length_groups_cap_padded_tokens_and_keep_every_row() -> None:
    lengths = [30, 31, 29, 60, 61, 300, 12, 30, 33, 28, 27, 26]
    groups = length_groups(lengths, max_batch=32, max_padding=0.5, max_tokens=128)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    for g in groups:
        width = max(lengths[i] for i in g)
        assert width * len(g) <= 128 or len(g) == 1  # a row wider than the budget runs alone
    assert [5] in groups
    assert length_groups(lengths, 32, 10.0) == length_groups(lengths, 32, 10.0, None)


def test_spread_groups_gives_every_worker_rows_and_loses_none() -> None:
    assert spread_groups([[0]], 2) == [[0]]  # one row cannot be split
    assert spread_groups([[0, 1, 2, 3, 4]], 2) == [[0, 1], [2, 3, 4]]
    assert spread_groups([[0, 1], [2, 3, 4, 5]], 2) == [[0, 1], [2, 3, 4, 5]]  # already enough groups
    spread = spread_groups([[5, 3, 1, 0, 2, 4, 6, 7]], 4)
    assert len(spread) == 4 and sorted(i for g in spread for i in g) == list(range(8))
    assert spread_groups([], 2) == []


def test_concurrent_workers_give_the_same_scores_in_the_same_order(clf: SentimentClassifier) -> None:
    texts = [normalise(t) for t in ("ok", "love it " * 20, "worst update ever, app crashes", "meh", "fine " * 40,
                                      "the support team was slow but helpful", "🙂", "cancelled my plan today")] * 5
    one = SentimentClassifier(intra_op_threads=2, workers=1).logits(texts, batch_size=32)
    two = SentimentClassifier(intra_op_threads=1, workers=2)
    assert np.array_equal(two.logits(texts, batch_size=32), one)
    assert np.array_equal(two.logits(texts[:1], batch_size=1), one[:1])


def test_lazy_thread_safe_load() -> None:
    fresh = SentimentClassifier()
    out: list[list[SentimentResult]] = []
    threads = [threading.Thread(target=lambda: out.append(fresh.classify(["nice"]))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(out) == 4 and all(o == out[0] for o in out)


def test_no_torch_at_runtime() -> None:
    code = (
        "import sys; from enrich.sentiment import SentimentClassifier; "
        "SentimentClassifier().classify(['checking imports']); "
        "bad = [m for m in ('torch', 'transformers') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_stage_returns_one_enrichment_per_mention(clf: SentimentClassifier) -> None:
    from listener.types import Mention

    now = datetime(2026, 11, 25, tzinfo=UTC)
    mentions = [
        Mention(source="s", kind="rss", native_id=str(i), url=None, title=title, text=text, author=None, created_at=now)
        for i, (title, text) in enumerate(
            [("Love it", "Best purchase this year"), (None, ""), ("Broken", "crashes on start"), (None, "🙂")]
        )
    ]
    stage = SentimentStage(clf)
    assert stage.name == "sentiment" and stage.version == MODEL_VERSION
    out = stage.run(mentions)
    assert [e.mention_id for e in out] == [m.id for m in mentions]
    assert all(e.stage == "sentiment" and e.model_version == MODEL_VERSION for e in out)
    assert out[0].data["label"] == "positive"
    assert out[1].data == {"label": None, "score": None, "scores": {}, "reason": "empty text"}
    assert out[2].data["label"] == "negative"
    assert set(out[3].data) == {"label", "score", "scores", "reason"}
