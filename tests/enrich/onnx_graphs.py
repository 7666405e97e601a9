"""Tiny token-in, logits-out ONNX graphs for the quantiser tests (the shape the exported encoders have)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper


def save_token_model(path: Path, nodes: list[onnx.NodeProto], arrays: dict[str, np.ndarray]) -> None:
    """A graph of ``nodes`` over inputs input_ids/attention_mask with output ``logits`` and ``arrays`` as weights."""
    graph = helper.make_graph(
        nodes,
        "tiny",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"]),
        ],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "seq", 3])],
        [numpy_helper.from_array(a, n) for n, a in arrays.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def run_logits(path: Path, ids: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out: np.ndarray = session.run(["logits"], {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0]
    return out
