"""Static int8 rewrite (enrich/training/quantize_static.py) on a small encoder-like graph.

What the runtime relies on: a row's output does not depend on its batch (fixed ranges), the result stays
close to fp32 even with an outlier channel, padding does not widen the calibrated ranges, biases are
folded into the integer GEMM, and calibrating on evaluation text is refused.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from enrich.training.quantize_static import calibrate, calibration_seqs, quantize_static
from tests.enrich.onnx_graphs import run_logits as _run
from tests.enrich.onnx_graphs import save_token_model

VOCAB, HIDDEN, FFN, PAD = 1200, 16, 48, 0


def _model(path: Path) -> None:
    """ids -> embedding -> MatMul+bias -> Relu -> MatMul+bias -> logits; column 3 of the table is an outlier."""
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(VOCAB, HIDDEN)).astype(np.float32)
    emb[:, 3] *= 20
    emb[PAD] = 500.0  # the padding row: huge, so a range that counted padding would show it
    arrays = {
        "emb": emb,
        "w1": rng.normal(size=(HIDDEN, FFN)).astype(np.float32) / 4,
        "b1": rng.normal(size=FFN).astype(np.float32),
        "w2": rng.normal(size=(FFN, 3)).astype(np.float32) / 7,
        "b2": rng.normal(size=3).astype(np.float32),
    }
    nodes = [
        helper.make_node("Gather", ["emb", "input_ids"], ["h"], name="embeddings/word_embeddings/Gather"),
        helper.make_node("MatMul", ["h", "w1"], ["m1"], name="layer/dense1/MatMul"),
        helper.make_node("Add", ["b1", "m1"], ["a1"], name="layer/dense1/Add"),
        helper.make_node("Relu", ["a1"], ["r1"], name="relu"),
        helper.make_node("MatMul", ["r1", "w2"], ["m2"], name="layer/dense2/MatMul"),
        helper.make_node("Add", ["m2", "b2"], ["logits"], name="layer/dense2/Add"),
    ]
    save_token_model(path, nodes, arrays)


def _seqs(n: int, seed: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(1, VOCAB, size=int(rng.integers(3, 12))).tolist() for _ in range(n)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("static") / "fp32.onnx"
    _model(path)
    return path


def test_static_int8_is_batch_invariant_close_to_fp32_and_folds_biases(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "int8st.onnx"
    summary = quantize_static(tiny, out, _seqs(200, 1))
    assert summary["matmul_static"] == 2 and summary["bias_folded"] == 2 and summary["embedding"] == 1
    nodes = onnx.load(str(out)).graph.node
    ops = [n.op_type for n in nodes]
    assert "ReduceMax" not in ops and "ReduceMin" not in ops  # no per-token range computed at run time
    assert ops.count("MatMulIntegerToFloat") == 2
    assert not {"layer/dense1/Add", "layer/dense2/Add"} & {n.name for n in nodes}  # biases inside the GEMMs
    ids = np.random.default_rng(2).integers(1, VOCAB, size=(8, 11)).astype(np.int64)
    batched = _run(out, ids)
    for i in range(len(ids)):
        assert np.allclose(_run(out, ids[i : i + 1])[0], batched[i], atol=1e-5)
    fp32 = _run(tiny, ids)
    assert np.abs(batched - fp32).max() < 0.1 * np.abs(fp32).max()
    assert (batched.argmax(-1) == fp32.argmax(-1)).mean() > 0.9


def test_outlier_channel_is_handled_apart_and_keeps_the_others_precise(tiny: Path, tmp_path: Path) -> None:
    """Without outlier handling the x20 column sets the range and the small columns lose their bits."""
    ids = np.random.default_rng(3).integers(1, VOCAB, size=(16, 9)).astype(np.int64)
    fp32 = _run(tiny, ids)
    errors = {}
    for mode in ("auto", "none"):
        out = tmp_path / f"{mode}.onnx"
        summary = quantize_static(tiny, out, _seqs(200, 1), outliers=mode)
        errors[mode] = np.abs(_run(out, ids) - fp32).mean()
        if mode == "auto":
            assert summary["outliers_split"].get("h") == [3] or "h" in summary["outliers_shrunk"]
    assert errors["auto"] < errors["none"]


def test_calibration_ranges_ignore_padding(tiny: Path) -> None:
    stats = calibrate(tiny, [[5, 6, 7], [8, 9, 10, 11, 12, 13, 14]], pad=PAD)  # the short row gets padded
    assert max(stats["h"]["max"]) < 100  # the padding row (500) never counts


def test_dynamic_tensors_keep_per_token_scales(tiny: Path, tmp_path: Path) -> None:
    summary = quantize_static(tiny, tmp_path / "mixed.onnx", _seqs(100, 4), dynamic=["r1"])
    assert summary["matmul_per_token"] == 1 and summary["matmul_static"] == 1 and summary["per_token"] == ["r1"]


def test_no_calibration_data_and_evaluation_text_are_refused(tiny: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="calib_seqs"):
        quantize_static(tiny, tmp_path / "x.onnx", [])
    with pytest.raises(ValueError, match="training-side text only"):
        calibration_seqs(tmp_path, "val")
