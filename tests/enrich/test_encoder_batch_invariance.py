"""The shipped encoder is batch invariant: a text's vectors and labels do not depend on its batch.

The model is quantised with fixed, calibrated int8 activation ranges (enrich/export_encoder.py), so a text
embedded alone, in a padded batch of 8 mixed-length texts, or in the runtime's length-grouped batches
of up to 32 gets the same post and clause vectors (up to float rounding, ≤ 1e-5) and therefore the
same intent, journey stage and topics.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from enrich.embedding import MODEL_DIR, ClauseData, Encoder
from enrich.evaluate_insight import load_items
from enrich.intent import intent_classifier
from enrich.journey import journey_classifier
from enrich.topics import TopicModel, default_taxonomy
from tests.enrich.helpers import appstore_reviews

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def texts(corpora: Path) -> list[str]:
    """Real texts of very different lengths (one-liners to truncated long reviews), in corpus order."""
    items = [i.text for i in load_items()]
    reviews = list(appstore_reviews(corpora).values())
    return items[:48] + reviews[:14] + ["ok the app", "Battery dies. " * 60]


Embedded = tuple[np.ndarray, list[ClauseData]]


def _alone(texts: list[str]) -> Embedded:
    enc = Encoder(workers=1)
    posts, clauses = [], []
    for t in texts:
        post, cl = enc.embed_clauses([t])
        posts.append(post[0])
        clauses.append(cl[0])
    return np.stack(posts), clauses


def _in_batches_of_8(texts: list[str]) -> Embedded:
    """Padded batches of 8 in corpus order (lengths mixed, lots of padding), forced by the grouping knobs."""
    enc = Encoder(workers=1, max_batch=8, max_padding=1e9, per_row=False)
    posts, clauses = [], []
    for start in range(0, len(texts), 8):
        post, cl = enc.embed_clauses(texts[start : start + 8])
        posts.append(post)
        clauses += cl
    return np.concatenate(posts), clauses


def _grouped_32(texts: list[str]) -> Embedded:
    return Encoder(workers=2, max_batch=32, per_row=False).embed_clauses(texts)


def _max_diff(a: Embedded, b: Embedded) -> float:
    worst = float(np.abs(a[0] - b[0]).max())
    for (names_a, vecs_a), (names_b, vecs_b) in zip(a[1], b[1], strict=True):
        assert names_a == names_b
        if len(vecs_a):
            worst = max(worst, float(np.abs(vecs_a - vecs_b).max()))
    return worst


def _labels(texts: list[str], embedded: Embedded) -> list[Any]:
    vecs, clauses = embedded
    intents = [p[0] for p in intent_classifier().predict(texts, vecs)]
    stages = [p[0] for p in journey_classifier().predict(texts, vecs)]
    model = TopicModel(default_taxonomy())
    scores, keywords, _ = model.score_matrix(texts, vecs, clauses)
    topics = [tuple(np.flatnonzero(row).tolist()) for row in model.decide(scores, keywords)]
    return list(zip(intents, stages, topics, strict=True))


def test_card_promises_batch_invariance_under_a_new_version() -> None:
    card = json.loads((MODEL_DIR / "model_card.json").read_text("utf-8"))
    assert card["batch_invariant"] is True
    assert card["batch_alone_vs_grouped_max_abs_diff"] <= TOLERANCE
    assert card["version"] != "minilm-l6-v2-base-onnx-1"  # the batch-dependent model's vectors get recomputed
    assert "static int8 activations" in card["quantisation"]  # fixed ranges: no token depends on another
    assert Encoder().per_row is False


def test_vectors_and_labels_alone_in_8_and_grouped_32_agree(texts: list[str]) -> None:
    alone, eight, grouped = _alone(texts), _in_batches_of_8(texts), _grouped_32(texts)
    assert np.count_nonzero(alone[0].any(axis=1)) == len(texts)
    assert _max_diff(alone, eight) <= TOLERANCE
    assert _max_diff(alone, grouped) <= TOLERANCE
    labels = _labels(texts, alone)
    assert _labels(texts, eight) == labels
    assert _labels(texts, grouped) == labels
    assert len({intent for intent, _, _ in labels}) >= 3  # the labels say something (not all "other")


def test_grouping_uses_length_groups_on_both_workers(texts: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    enc = Encoder(workers=2, max_batch=32, per_row=False)
    seen: list[int] = []
    run = enc.model.run_batches

    def spy(output: str, batches: Any) -> list[np.ndarray]:
        seen.extend(len(b) for b in batches)
        return run(output, batches)

    monkeypatch.setattr(enc.model, "run_batches", spy)
    enc.embed(texts[:3])
    assert len(seen) >= 2  # a short call is split so both workers have a batch
    seen.clear()
    enc.embed(texts)
    assert sum(seen) == len(texts) and max(seen) <= 32 and len(seen) < len(texts)


def test_a_model_without_the_promise_runs_each_text_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("model.onnx", "tokenizer.json"):
        os.symlink(MODEL_DIR / name, tmp_path / name)
    card = json.loads((MODEL_DIR / "model_card.json").read_text("utf-8"))
    card.pop("batch_invariant")
    (tmp_path / "model_card.json").write_text(json.dumps(card), "utf-8")
    enc = Encoder(tmp_path, workers=1)
    sizes: list[int] = []
    run = enc.model.run_batches

    def spy(output: str, batches: Any) -> list[np.ndarray]:
        sizes.extend(len(b) for b in batches)
        return run(output, batches)

    monkeypatch.setattr(enc.model, "run_batches", spy)
    vecs = enc.embed(["the app crashes on start", "love it", "how do I export my data to csv?"])
    assert enc.per_row is True and sizes == [1, 1, 1]
    assert np.allclose(
        vecs,
        Encoder().embed(["the app crashes on start", "love it", "how do I export my data to csv?"]),
        atol=TOLERANCE,
    )
