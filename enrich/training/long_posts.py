"""How the sentiment model should read a post longer than its token budget: measured, not assumed.

Long labelled documents are rebuilt from the ICWSM-2014 sentence ratings: Amazon reviews and NYT
editorials whose sentences all sit in the calibration or test split (never trained on). A document's
label is the band mapping of its mean sentence rating. Every strategy runs the shipped model on the
documents longer than the budget; each is also compared document by document with the shipped rule
(documents it gets right that the shipped rule gets wrong, and the reverse), because on a few hundred
documents a difference of one or two points in macro-recall can be chance.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from enrich.sentiment import SentimentClassifier
from enrich.textprep import head_tail_ids, normalise
from enrich.training.data import ICWSM_DOMAINS, ensure_vader_sdist, load_prepared, rating_to_label
from enrich.training.scores import metrics, softmax

DOC_DOMAINS = ("icwsm_products", "icwsm_news")
UNSEEN_SPLITS = ("calib", "test")
Doc = tuple[str, str]  # (domain, document id)


def long_documents() -> dict[Doc, list[tuple[int, float, str]]]:
    """Sentences (position, mean rating, normalised text) of every unseen review and editorial."""
    examples = load_prepared()
    docs: dict[Doc, list[tuple[int, float, str]]] = {}
    for domain in DOC_DOMAINS:
        keep = {e.uid.split(":")[1].split("_")[0] for e in examples if e.domain == domain and e.split in UNSEEN_SPLITS}
        text = (ensure_vader_sdist() / f"{ICWSM_DOMAINS[domain]}_GroundTruth.txt").read_text("utf-8-sig", "replace")
        for line in text.splitlines():
            parts = line.split("\t")
            if len(parts) >= 3 and "_" in parts[0] and parts[0].split("_")[0] in keep:
                doc, n = parts[0].split("_", 1)
                docs.setdefault((domain, doc), []).append((int(n), float(parts[1]), normalise(parts[2])))
    return {k: sorted(v) for k, v in docs.items() if len(v) >= 3}


def truncation_study(clf: SentimentClassifier, budgets: tuple[int, ...] = (128, 64)) -> dict[str, Any]:
    """Head-only, head+tail, first+last sentences and chunk-and-pool against the shipped head fraction."""
    clf._ensure_loaded()
    model = clf.model
    docs = long_documents()
    ids = {k: model.tokenizer.encode(" ".join(t for _, _, t in v)).ids for k, v in docs.items()}

    def probs(seqs: list[list[int]]) -> np.ndarray:
        return softmax(np.concatenate(model.run_batches("logits", [[q] for q in seqs])) / clf.temperature)

    def cut(frac: float) -> Callable[[Doc, int], np.ndarray]:
        return lambda k, budget: probs([head_tail_ids(ids[k], budget, model.cls, model.sep, frac)])[0]

    def first_last(k: Doc, budget: int) -> np.ndarray:
        first, last = docs[k][0][2], docs[k][-1][2]
        return probs([head_tail_ids(model.tokenizer.encode(f"{first} {last}").ids, budget, model.cls, model.sep)])[0]

    def chunk_mean(k: Doc, budget: int) -> np.ndarray:
        body, width = ids[k][1:-1], budget - 2
        return probs([[model.cls, *body[i : i + width], model.sep] for i in range(0, len(body), width)]).mean(0)

    strategies: dict[str, Callable[[Doc, int], np.ndarray]] = {
        "head_only": cut(1.0),
        "head_tail_50_50": cut(0.5),
        "head_tail_25_75": cut(0.25),
        "first_last_sentences": first_last,
        "chunk_mean": chunk_mean,
    }
    res: dict[str, Any] = {"shipped_head_frac": clf.head_frac}
    for budget in budgets:
        long = [k for k in docs if len(ids[k]) > budget]
        y = np.array([rating_to_label(float(np.mean([r for _, r, _ in docs[k]]))) for k in long])
        shipped_ok = np.array([cut(clf.head_frac)(k, budget).argmax() for k in long]) == y
        out: dict[str, Any] = {
            "n_docs": len(long),
            "n_by_domain": {d: sum(k[0] == d for k in long) for d in DOC_DOMAINS},
            "strategies": {},
        }
        for name, fn in strategies.items():
            p = np.stack([fn(k, budget) for k in long])
            ok = p.argmax(1) == y
            out["strategies"][name] = {
                **metrics(y.tolist(), p),
                "right_where_shipped_wrong": int((ok & ~shipped_ok).sum()),
                "wrong_where_shipped_right": int((~ok & shipped_ok).sum()),
            }
        res[f"budget_{budget}"] = out
    return res


def render(study: dict[str, Any]) -> list[str]:
    """EVALUATION.md lines."""
    lines = [
        "## Long-post truncation (unseen Amazon reviews and NYT editorials rebuilt from their rated sentences)",
        "",
        f"Shipped rule: head fraction {study['shipped_head_frac']} of the token budget. `+a/-b` = documents a strategy",
        "gets right where the shipped rule is wrong / wrong where it is right.",
        "",
    ]
    for budget, res in study.items():
        if not budget.startswith("budget_"):
            continue
        by = ", ".join(f"{n} {d}" for d, n in res["n_by_domain"].items())
        lines.append(f"- {budget}: {res['n_docs']} documents longer than the budget ({by})")
        for name, m in res["strategies"].items():
            lines.append(
                f"  - {name}: macro-recall {m['macro_recall']:.4f}, accuracy {m['accuracy']:.4f}, "
                f"bin {m['binary_acc_pos_neg']:.4f}, "
                f"+{m['right_where_shipped_wrong']}/-{m['wrong_where_shipped_right']}"
            )
    return lines
