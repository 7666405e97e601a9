"""Per-token int8 rewrite (enrich/training/quantize.py) on a small synthetic encoder-like graph.

Checks what the runtime relies on: a row's output does not depend on the other rows of the batch
(exact batch invariance), int8 stays close to fp32 (also for an embedding table with an outlier
column), and the file holds int8 weights instead of fp32 ones.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx  # in the dev extra, so this runs in CI (a missing package fails loudly instead of skipping)
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from enrich.training.quantize import quantize_per_token
from tests.enrich.onnx_graphs import run_logits as _run
from tests.enrich.onnx_graphs import save_token_model

VOCAB, HIDDEN, FFN = 1200, 16, 48


def _model(path: Path) -> None:
    """ids -> embedding Gather -> MatMul+Add -> Relu -> MatMul (two weight MatMuls, one shared-input pair)."""
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(VOCAB, HIDDEN)).astype(np.float32)
    emb[:, 3] *= 20  # an outlier channel, as LayerNorm outputs of BERT have
    w1 = rng.normal(size=(HIDDEN, FFN)).astype(np.float32) / 4
    w1b = rng.normal(size=(HIDDEN, FFN)).astype(np.float32) / 4
    b1 = rng.normal(size=FFN).astype(np.float32)
    w2 = rng.normal(size=(FFN, 3)).astype(np.float32) / 7
    nodes = [
        helper.make_node("Gather", ["emb", "input_ids"], ["h"], name="embeddings/word_embeddings/Gather"),
        helper.make_node("MatMul", ["h", "w1"], ["m1"], name="layer/dense1/MatMul"),
        helper.make_node("MatMul", ["h", "w1b"], ["m1b"], name="layer/dense1b/MatMul"),
        helper.make_node("Add", ["m1", "m1b"], ["m2"], name="sum"),
        helper.make_node("Add", ["m2", "b1"], ["a1"], name="bias"),
        helper.make_node("Relu", ["a1"], ["r1"], name="relu"),
        helper.make_node("MatMul", ["r1", "w2"], ["logits"], name="layer/dense2/MatMul"),
    ]
    save_token_model(path, nodes, {"emb": emb, "w1": w1, "w1b": w1b, "b1": b1, "w2": w2})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("quant") / "fp32.onnx"
    _model(path)
    return path


def test_int8_is_batch_invariant_and_close_to_fp32(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "int8.onnx"
    counts = quantize_per_token(tiny, out)
    assert counts == {"matmul": 3, "embedding": 1}
    ids = np.random.default_rng(1).integers(0, VOCAB, size=(8, 11)).astype(np.int64)
    batched = _run(out, ids)
    for i in range(len(ids)):
        assert np.array_equal(_run(out, ids[i : i + 1])[0], batched[i])  # neighbours change nothing
    fp32 = _run(tiny, ids)
    assert np.abs(batched - fp32).max() < 0.1 * np.abs(fp32).max()  # 8 bits with a x20 outlier channel
    assert out.stat().st_size < tiny.stat().st_size / 2.5  # int8 weights and embedding table (+ scales)


def test_embedding_rows_survive_an_outlier_column(tiny: Path, tmp_path: Path) -> None:
    """Row x column scales: the x20 column does not wipe out the small columns of each row."""
    out = tmp_path / "int8.onnx"
    quantize_per_token(tiny, out)
    model = onnx.load(str(out))
    model.graph.output.append(helper.make_tensor_value_info("h", TensorProto.FLOAT, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ids = np.arange(0, VOCAB, 7, dtype=np.int64).reshape(1, -1)
    rows = session.run(["h"], {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0][0]
    table = numpy_helper.to_array(onnx.load(str(tiny)).graph.initializer[0])[ids[0]]
    small = np.delete(np.arange(HIDDEN), 3)
    rel = np.abs(rows[:, small] - table[:, small]).max() / np.abs(table[:, small]).max()
    assert rel < 0.02


def test_keep_fp32_leaves_named_nodes_alone(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "partial.onnx"
    counts = quantize_per_token(tiny, out, keep_fp32=("dense2",))
    assert counts == {"matmul": 2, "embedding": 1}
    names = {n.name for n in onnx.load(str(out)).graph.node}
    assert "layer/dense2/MatMul" in names and "layer/dense1/MatMul" not in names
