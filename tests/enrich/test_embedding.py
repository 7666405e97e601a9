"""Embedding stage: the shipped ONNX encoder, stored vectors, semantic search and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from enrich.embedding import DIM, MODEL_DIR, embed_texts
from enrich.stages import semantic_search
from enrich.vectors import EmbeddingStage, load_vectors, pack, unpack
from storage import Store
from tests.enrich.helpers import mention

REPO = Path(__file__).resolve().parents[2]
BAD_TEXTS = ["", "🙂🙂🙂", "x" * 100_000, "broken \ud83d surrogate \x00\x07 control", "!!! ??? 1234"]


def test_model_files_and_card() -> None:
    model = MODEL_DIR / "model.onnx"
    assert model.exists() and (MODEL_DIR / "tokenizer.json").exists() and (MODEL_DIR / "MODEL_CARD.md").exists()
    assert model.stat().st_size < 30_000_000
    card = json.loads((MODEL_DIR / "model_card.json").read_text())
    assert card["shipped"] == "int8" and card["int8_cosine_mean"] >= 0.98 and card["dim"] == DIM


def test_vectors_are_unit_and_semantic() -> None:
    v = embed_texts(
        [
            "The battery dies within an hour.",
            "Battery drains really fast on my phone",
            "I love the new font in the menu",
            "",
        ]
    )
    assert v.shape == (4, DIM) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v[:3], axis=1), 1.0, atol=1e-3)
    assert not v[3].any()  # empty text → zero vector, not noise
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2


def test_pack_roundtrip_float16() -> None:
    v = embed_texts(["sync keeps failing"])[0]
    data = pack(v)
    assert data["dim"] == DIM and isinstance(data["f16"], str)
    back = unpack(json.loads(json.dumps(data)))
    assert back is not None and float(back @ v) > 0.999
    assert unpack({"dim": 384, "f16": "not base64!"}) is None and unpack(None) is None


def test_stage_bad_input_one_result_each() -> None:
    ms = [mention(i, t) for i, t in enumerate(BAD_TEXTS)]
    out = EmbeddingStage().run(ms)
    assert [e.mention_id for e in out] == [m.id for m in ms]
    assert all(e.stage == "embedding" and e.data["dim"] == DIM for e in out)
    assert out[0].data["f16"] is None and out[0].data["reason"]
    assert out[2].data["f16"]  # 100 kB text is truncated, still embedded
    assert EmbeddingStage().run([]) == []


def test_store_roundtrip_and_semantic_search(tmp_path: Path) -> None:
    texts = [
        "Battery dies in an hour since the update",
        "Customer support never answered my ticket",
        "How do I export my notes to PDF?",
        "The new dark theme looks great",
    ]
    ms = [mention(i, t) for i, t in enumerate(texts)]
    with Store.open(tmp_path / "l.db") as store:
        store.save_batch("t", ms, None)
        stage = EmbeddingStage()
        store.save_enrichments(stage.run(ms))
        assert store.count_unenriched("embedding", stage.version) == 0
        vecs = load_vectors(store, [m.id for m in ms] + ["missing"])
        assert vecs.shape == (5, DIM) and not vecs[4].any()
        assert np.allclose(vecs[:4], embed_texts(texts), atol=2e-3)
        hits = semantic_search(store, "my phone's battery drains quickly", k=2)
        assert hits[0][0] == ms[0].id and hits[0][1] > hits[1][1]
        only = semantic_search(store, "battery", k=5, ids=[ms[1].id, ms[2].id])
        assert {h[0] for h in only} <= {ms[1].id, ms[2].id}


def test_runtime_never_imports_torch() -> None:
    code = (
        "import sys; from enrich.stages import insight_stages; from enrich.embedding import embed_texts;"
        "embed_texts(['hello world']); print('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


@pytest.mark.parametrize("bad", [None, 42])
def test_embed_non_text_is_zero(bad: object) -> None:
    assert not embed_texts([bad])[0].any()  # type: ignore[list-item]


def test_clause_vectors_come_from_the_same_pass() -> None:
    from enrich.embedding import clause_spans, default_encoder, kept_indices
    from enrich.textprep import head_tail_ids

    ids = list(range(100, 400))
    assert [ids[i] for i in kept_indices(len(ids), 128, 0.75)] == head_tail_ids(ids, 128, 100, 399, 0.75)
    text = "love the app, battery dies in an hour. Support was quick, ok"
    assert [text[a:b] for a, b in clause_spans(text)] == [
        "love the app",
        "battery dies in an hour.",
        "Support was quick, ok",
    ]
    enc = default_encoder()
    post, clauses = enc.embed_clauses([text, "", "x" * 100_000])
    assert np.allclose(post, enc.embed([text, "", "x" * 100_000]), atol=1e-5)
    names, vecs = clauses[0]
    assert names == ["love the app", "battery dies in an hour.", "Support was quick, ok"]
    assert vecs.shape == (3, DIM) and np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-3)
    battery = embed_texts(["the battery drains fast"])[0]
    assert int(np.argmax(vecs @ battery)) == 1
    assert clauses[1][0] == [] and clauses[1][1].shape == (0, DIM)


def test_clause_pooling_equals_the_mean_of_each_clauses_tokens() -> None:
    """The binary-search/cumulative-sum pooling picks exactly the tokens wholly inside each clause."""
    from enrich.embedding import clause_spans, pool_clauses

    text = "Love the app, but the battery dies in an hour. Support never answered; refund please!"
    spans = clause_spans(text)
    rng = np.random.default_rng(0)
    offsets = [(0, 0)]  # [CLS]
    for word in __import__("re").finditer(r"\S+", text):
        a, b = word.span()
        cut = a + max(1, (b - a) // 2)
        offsets += [(a, cut), (cut, b)] if b - a > 3 else [(a, b)]
    offsets.append((0, 0))  # [SEP]
    tokens = rng.normal(size=(len(offsets), DIM)).astype(np.float32)
    pooled = pool_clauses(text, offsets, tokens)
    assert pooled is not None
    names, vecs = pooled
    want = []
    for a, b in spans:
        rows = [p for p, (x, y) in enumerate(offsets) if y > x and x >= a and y <= b]
        v = tokens[rows].mean(axis=0)
        want.append(v / np.linalg.norm(v))
    assert names == [text[a:b] for a, b in spans] and len(names) >= 3
    assert np.allclose(vecs, np.stack(want), atol=1e-5)
    assert pool_clauses("!!", [(0, 0), (0, 2), (0, 0)], tokens[:3]) is None


def test_parallel_batches_give_the_same_vectors() -> None:
    """Two encoder calls in flight (the default) return exactly what one at a time returns."""
    from enrich.embedding import Encoder

    texts = [
        f"review {i}: the app {'crashes' if i % 2 else 'works'} after the update, " * (1 + i % 5) for i in range(40)
    ]
    one, two = Encoder(workers=1), Encoder(workers=2)
    post1, clauses1 = one.embed_clauses(texts)
    post2, clauses2 = two.embed_clauses(texts)
    assert np.array_equal(post1, post2) and np.array_equal(one.embed(texts), two.embed(texts))
    assert all(a[0] == b[0] and np.array_equal(a[1], b[1]) for a, b in zip(clauses1, clauses2, strict=True))
