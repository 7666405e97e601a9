"""Scores for the sentiment model's evaluation: plain numpy, no torch, so runtime-side studies can use them."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from enrich.training.data import LABELS


def macro_recall(y_true: Sequence[int], y_pred: Sequence[int], n: int = 3) -> float:
    yt, yp = np.asarray(y_true), np.asarray(y_pred)
    recalls = [float((yp[yt == c] == c).mean()) for c in range(n) if (yt == c).any()]
    return float(np.mean(recalls))


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


def metrics(y: Sequence[int], probs: np.ndarray) -> dict[str, float]:
    """Macro-recall (TweetEval's metric), accuracy, macro-F1, ECE and positive-vs-negative binary accuracy."""
    yt = np.asarray(y)
    pred = probs.argmax(1)
    f1s = []
    for c in range(len(LABELS)):
        tp = float(((pred == c) & (yt == c)).sum())
        prec = tp / max(1, int((pred == c).sum()))
        rec = tp / max(1, int((yt == c).sum()))
        f1s.append(0.0 if tp == 0 else 2 * prec * rec / (prec + rec))
    polar = yt != 1
    binary = (np.where(probs[polar, 2] > probs[polar, 0], 2, 0) == yt[polar]).mean() if polar.any() else float("nan")
    return {
        "n": len(yt),
        "macro_recall": round(macro_recall(y, pred.tolist()), 4),
        "accuracy": round(float((pred == yt).mean()), 4),
        "macro_f1": round(float(np.mean(f1s)), 4),
        "ece": round(ece(probs, y), 4),
        "binary_acc_pos_neg": round(float(binary), 4),
    }
