"""Uniform weight average of fine-tuned runs ("model soup", Wortsman et al., ICML 2022).

Runs fine-tuned from the same pre-trained weights sit in one basin, so the average of their weights is a
model of the same size and speed that is usually better than each ingredient: on TweetEval val the plain
fine-tune (minilm-ft-v1, 0.7523) and its distilled continuation (minilm-kd-v1, 0.7502) average to 0.7562,
and the held-out product-review split gains two points of macro-recall. The soup is written as a normal
run folder (``best/``, ``log.jsonl``), so ``export``, ``evaluate`` and ``card`` treat it like any run.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from enrich.training.data import CACHE, load_prepared, select

WEIGHTS = "model.safetensors"


def average_state(paths: Sequence[Path]) -> dict[str, np.ndarray]:
    """Element-wise mean of the floating-point tensors of several checkpoints with identical layouts."""
    states = [load_file(str(p)) for p in paths]
    first = states[0]
    for path, state in zip(paths[1:], states[1:], strict=True):
        if state.keys() != first.keys() or any(state[k].shape != first[k].shape for k in first):
            raise ValueError(f"{path} does not have the same tensors as {paths[0]}: not soup ingredients")
    out: dict[str, np.ndarray] = {}
    for key, array in first.items():
        if np.issubdtype(array.dtype, np.floating):
            mean = np.mean(np.stack([s[key].astype(np.float64) for s in states]), axis=0)
            out[key] = np.ascontiguousarray(mean.astype(array.dtype))
        else:
            out[key] = array.copy()
    return out


def _val_macro_recall(best: Path) -> tuple[float, float]:
    """TweetEval-val macro-recall and accuracy of a weights folder (torch: training extra only)."""
    from transformers import AutoTokenizer

    from enrich.training.model import base_model_dir, load_base
    from enrich.training.train import encode, macro_recall, predict_logits

    val = select(load_prepared(), "val")
    tok = AutoTokenizer.from_pretrained(base_model_dir())
    base = load_base(0.1)
    model = type(base).from_pretrained(best, config=base.config, attn_implementation="eager")
    logits = predict_logits(model, encode(tok, [e.text for e in val], 128))
    y = [e.label for e in val]
    pred = logits.argmax(1)
    return macro_recall(y, pred), float(np.mean(pred == np.asarray(y)))


def soup(runs: Sequence[str], out_run: str, out_root: Path = CACHE / "train") -> Path:
    """Average the ``best/`` weights of ``runs`` into ``out_root/out_run/best``; logs its val figures."""
    if len(runs) < 2:
        raise ValueError("a soup needs at least two runs")
    bests = [out_root / r / "best" for r in runs]
    missing = [str(b) for b in bests if not (b / WEIGHTS).exists()]
    if missing:
        raise FileNotFoundError(f"runs without finished weights: {', '.join(missing)}")
    run_dir = out_root / out_run
    best = run_dir / "best"
    best.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        if (bests[0] / name).exists():
            shutil.copy(bests[0] / name, best / name)
    save_file(average_state([b / WEIGHTS for b in bests]), str(best / WEIGHTS), metadata={"format": "pt"})
    recipes: dict[str, object] = {}
    for r in runs:
        log = out_root / r / "log.jsonl"
        lines = log.read_text().splitlines() if log.exists() else []
        start: dict[str, object] = next((json.loads(x) for x in lines if '"event": "start"' in x), {})
        recipes[r] = start.get("recipe")
    t0 = time.time()
    mr, acc = _val_macro_recall(best)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    recipe = {"run": out_run, "base": "minilm", "soup_of": list(runs), "weights": "uniform", "ingredients": recipes}
    events = [
        {"time": stamp, "event": "start", "recipe": recipe},
        {
            "time": stamp,
            "event": "eval",
            "step": 0,
            "epoch": 0,
            "val_macro_recall": round(mr, 4),
            "val_acc": round(acc, 4),
            "best": mr,
            "improved": True,
            "eval_s": round(time.time() - t0, 1),
        },
        {"time": stamp, "event": "done", "step": 0, "best": mr},
    ]
    (run_dir / "log.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    (run_dir / "recipe.json").write_text(json.dumps(recipe, indent=2) + "\n")
    print(json.dumps({"soup": out_run, "of": list(runs), "val_macro_recall": round(mr, 4), "val_acc": round(acc, 4)}))
    return run_dir
