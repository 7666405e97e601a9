"""Teacher-labelled augmentation of review sentences, to carry the teacher's product skill to the student.

On held-out ICWSM product sentences the mpnet teacher scores 0.957 positive-vs-negative, the MiniLM
student 0.910: the student has seen only 2,582 product sentences, too few to copy the teacher there.
Distillation needs inputs, not gold labels (TinyBERT, Jiao et al. 2020, augments its transfer set the
same way), so every training review sentence yields a few new texts: the sentence with the next one
of the same review (how customers actually write), a contiguous crop, and a copy with some words
dropped. Gold labels do not survive such edits ("not" may be the dropped word), so each new text gets
the teacher's probabilities as its soft target and the teacher's argmax as its hard label.

Only training-split sentences are used, never calibration or test ones. The texts and probabilities
are committed together (``teacher_augmented.npz``), so a student run does not need the teacher.
"""

from __future__ import annotations

import json
import random
import re
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from enrich.training.data import FIRST_TEACHER, SEED, SOFT_LABELS, Example, load_prepared, select

AUGMENTED = SOFT_LABELS.with_name("teacher_augmented.npz")
AUGMENT_DOMAINS = ("icwsm_products",)
VARIANTS_PER_SENTENCE = 6
_DOC = re.compile(r"^(?P<domain>[^:]+):(?P<doc>.+)_(?P<n>\d+)$")


def _doc_order(examples: Sequence[Example]) -> dict[str, list[Example]]:
    """Sentences of each review in order (uids are ``domain:review_sentence``)."""
    docs: dict[str, list[tuple[int, Example]]] = defaultdict(list)
    for e in examples:
        m = _DOC.match(e.uid)
        key, n = (m["doc"], int(m["n"])) if m else (e.uid, 0)
        docs[key].append((n, e))
    return {k: [e for _, e in sorted(v, key=lambda p: p[0])] for k, v in docs.items()}


def _crop(words: list[str], rng: random.Random) -> str:
    keep = max(4, round(len(words) * rng.uniform(0.5, 0.85)))
    start = rng.randint(0, max(0, len(words) - keep))
    return " ".join(words[start : start + keep])


def _drop(words: list[str], rng: random.Random) -> str:
    kept = [w for w in words if rng.random() > 0.15]
    return " ".join(kept if len(kept) >= 3 else words)


def variants(doc: list[Example], i: int, rng: random.Random, n: int) -> list[str]:
    """Up to ``n`` distinct new texts around sentence ``i`` of a review (never the sentence itself)."""
    text = doc[i].text
    words = text.split()
    pool: list[str] = []
    if i + 1 < len(doc):
        pool.append(f"{text} {doc[i + 1].text}")
    if i + 2 < len(doc):
        pool.append(f"{text} {doc[i + 1].text} {doc[i + 2].text}")
    if i > 0:
        pool.append(f"{doc[i - 1].text} {text}")
    for _ in range(3 * n):
        if len(pool) >= 3 * n:
            break
        if len(words) >= 6:
            pool.append(_crop(words, rng))
        if len(words) >= 4:
            pool.append(_drop(words, rng))
    seen = {text}
    out: list[str] = []
    for t in pool:
        if t not in seen:
            seen.add(t)
            out.append(t)
        if len(out) == n:
            break
    return out


def augmented_texts(
    examples: Sequence[Example],
    domains: Sequence[str] = AUGMENT_DOMAINS,
    per_sentence: int = VARIANTS_PER_SENTENCE,
    seed: int = SEED,
) -> list[tuple[str, str]]:
    """(uid, text) of the new texts built from the training split of ``domains``; deterministic for a seed."""
    rng = random.Random(f"augment-{seed}")
    out: list[tuple[str, str]] = []
    seen = {e.text for e in examples}  # a pair of sentences is built from both ends; keep it once
    for domain in domains:
        docs = _doc_order(select(list(examples), "train", {domain}))
        for key in sorted(docs):
            doc = docs[key]
            for i, e in enumerate(doc):
                for j, text in enumerate(variants(doc, i, rng, per_sentence)):
                    if text not in seen:
                        seen.add(text)
                        out.append((f"aug:{e.uid}:{j}", text))
    return out


def write_augmented(teacher_run: str = FIRST_TEACHER, out: Path = AUGMENTED) -> dict[str, object]:
    """Build the augmented texts, label them with the fine-tuned teacher and commit-ready save them."""
    from enrich.training.teacher import teacher_logits

    pairs = augmented_texts(load_prepared())
    logits = teacher_logits(teacher_run, [t for _, t in pairs])
    z = logits - logits.max(1, keepdims=True)
    probs = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out, uids=np.array([u for u, _ in pairs]), texts=np.array([t for _, t in pairs]), probs=probs.astype(np.float16)
    )
    summary: dict[str, object] = {
        "event": "augmented_done",
        "n": len(pairs),
        "teacher": teacher_run,
        "path": str(out),
        "teacher_label_counts": np.bincount(probs.argmax(1), minlength=3).tolist(),
    }
    print(json.dumps(summary), flush=True)
    return summary


def load_augmented(path: Path | str) -> tuple[list[Example], dict[str, np.ndarray]]:
    """Training examples (domain ``aug_<source>``, hard label = teacher argmax) and their soft targets."""
    data = np.load(path)
    uids, texts, probs = data["uids"].tolist(), data["texts"].tolist(), data["probs"].astype(np.float32)
    examples = []
    for uid, text, p in zip(uids, texts, probs, strict=True):
        source = uid.split(":")[1]
        examples.append(Example(uid, text, int(p.argmax()), f"aug_{source}", "train"))
    return examples, dict(zip(uids, probs, strict=True))
