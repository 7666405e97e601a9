"""Resumable full fine-tune of MiniLM (mean pooling + linear head) for 3-class sentiment.

Model selection: macro-averaged recall on TweetEval validation, evaluated every
``eval_every`` steps; the best weights are saved in HF format (``best/``) and
training stops early after ``patience`` evaluations without improvement.
Every ``ckpt_every`` steps model+optimizer+scheduler state is written to
``state.pt`` so a killed run continues where it stopped. Everything is logged
as JSON lines in ``log.jsonl``.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase, get_linear_schedule_with_warmup

from enrich.textprep import head_tail_ids
from enrich.training.augment import load_augmented
from enrich.training.data import (
    CACHE,
    LABELS,
    SEED,
    TRAIN_DOMAINS,
    Example,
    load_prepared,
    reweight_domains,
    select,
)
from enrich.training.model import MeanPoolClassifier, base_model_dir, load_base
from enrich.training.scores import macro_recall


@dataclass
class Recipe:
    """Hyperparameters; stored verbatim in the run log and model card."""

    run: str = "minilm-ft-v1"
    base: str = "minilm"  # "minilm" (student, shipped) | "mpnet" (teacher, training-time only)
    seed: int = SEED
    # seed of the head's random init (None: ``seed``); runs meant to be souped share it so their heads start alike
    head_seed: int | None = None
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup_frac: float = 0.06
    epochs: float = 2.0
    batch_size: int = 32
    max_length: int = 128
    dropout: float = 0.1
    class_weighting: str = "balanced"  # "none" | "balanced" (inverse class frequency)
    eval_every: int = 970  # ~half an epoch at 62k examples / 32
    ckpt_every: int = 200
    patience: int = 3
    train_domains: list[str] = field(default_factory=lambda: sorted(TRAIN_DOMAINS))
    soft_labels: str | None = None  # path to teacher soft labels (distillation), see teacher.py
    kd_alpha: float = 0.5
    kd_temperature: float = 2.0
    init_from: str | None = None  # warm start: a finished run whose best/ weights seed the student
    # per-domain sampling factor over the training split: 4 = every example four times, 0.25 = a seeded
    # random quarter; domains not named keep 1 (a domain the student lags the teacher on gets more steps)
    domain_weights: dict[str, float] = field(default_factory=dict)
    augmented: str | None = None  # teacher-labelled augmented texts (.npz, see augment.py); needs soft_labels
    # domains whose texts the student sees behind REVIEW_TAG, so that a runtime could mark review-site text
    # (app stores, review pages) and the model read reviews apart from tweets; val (tweets) stays untagged
    review_domains: list[str] = field(default_factory=list)


REVIEW_TAG = "review:"


def tag_review(text: str) -> str:
    """``text`` behind the review tag (``review_domains`` experiment: did not help, so the runtime never tags)."""
    return f"{REVIEW_TAG} {text}"


def encode(tok: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Tokenise without truncation, then head+tail truncate (same rule as runtime)."""
    enc = tok(list(texts), add_special_tokens=True, truncation=False)["input_ids"]
    cls_id, sep_id = tok.cls_token_id, tok.sep_token_id
    return [head_tail_ids(list(ids), max_length, cls_id, sep_id) for ids in enc]


def pad_batch(seqs: Sequence[list[int]], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    return ids, mask


def bucket_batches(lengths: Sequence[int], batch_size: int, rng: random.Random, pool: int = 50) -> list[list[int]]:
    """Shuffle, sort within pools of ``pool`` batches by length, then shuffle the batches (less padding)."""
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    batches: list[list[int]] = []
    chunk = batch_size * pool
    for start in range(0, len(idx), chunk):
        part = sorted(idx[start : start + chunk], key=lambda i: lengths[i])
        batches.extend(part[j : j + batch_size] for j in range(0, len(part), batch_size))
    rng.shuffle(batches)
    return batches


@torch.no_grad()
def predict_logits(
    model: torch.nn.Module, seqs: Sequence[list[int]], batch_size: int = 64, pad_id: int = 0
) -> np.ndarray:
    model.eval()
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    out = np.zeros((len(seqs), len(LABELS)), dtype=np.float32)
    for start in range(0, len(order), batch_size):
        part = order[start : start + batch_size]
        ids, mask = pad_batch([seqs[i] for i in part], pad_id)
        out[part] = model(input_ids=ids, attention_mask=mask).logits.float().numpy()
    return out


def _log(path: Path, record: dict[str, object]) -> None:
    record = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **record}
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")
    print(json.dumps(record), flush=True)


def _soft_targets(
    path: str | None, examples: list[Example], extra: dict[str, np.ndarray] | None = None
) -> np.ndarray | None:
    if not path:
        return None
    data = np.load(path)
    lookup = dict(zip(data["uids"].tolist(), data["probs"].astype(np.float32), strict=True)) | (extra or {})
    missing = [e.uid for e in examples if e.uid not in lookup]
    if missing:
        raise ValueError(f"{path}: no soft label for {len(missing)} training examples, e.g. {missing[:3]}")
    return np.stack([lookup[e.uid] for e in examples])


def build(
    recipe: Recipe, out_root: Path = CACHE / "train"
) -> tuple[torch.nn.Module, PreTrainedTokenizerBase, Callable[[Path], None]]:
    """Model, tokenizer and a "save best weights" function for the recipe's base encoder."""
    if recipe.base == "mpnet":
        from enrich.training.teacher import ensure_teacher

        enc_dir = ensure_teacher()
        teacher = MeanPoolClassifier(enc_dir, recipe.dropout)
        if recipe.init_from:  # continue a finished teacher (a second epoch under a fresh, lower LR schedule)
            warm_pt = out_root / recipe.init_from / "best" / "model.pt"
            if not warm_pt.exists():
                raise FileNotFoundError(f"--init-from {recipe.init_from}: no weights in {warm_pt.parent}")
            teacher.load_state_dict(torch.load(warm_pt, weights_only=True))
        ttok = AutoTokenizer.from_pretrained(enc_dir)

        def save_teacher(path: Path) -> None:
            path.mkdir(parents=True, exist_ok=True)
            torch.save(teacher.state_dict(), path / "model.pt")

        return teacher, ttok, save_teacher
    if recipe.head_seed is not None:
        torch.manual_seed(recipe.head_seed)
    student = load_base(recipe.dropout)
    if recipe.head_seed is not None:
        torch.manual_seed(recipe.seed)  # dropout follows the run's own seed
    if recipe.init_from:
        warm = out_root / recipe.init_from / "best"
        if not (warm / "model.safetensors").exists():
            raise FileNotFoundError(f"--init-from {recipe.init_from}: no weights in {warm}")
        student = type(student).from_pretrained(warm, config=student.config, attn_implementation="eager")
    stok = AutoTokenizer.from_pretrained(base_model_dir())

    def save_student(path: Path) -> None:
        student.save_pretrained(path)
        stok.save_pretrained(path)

    return student, stok, save_student


def train(
    recipe: Recipe,
    out_root: Path = CACHE / "train",
    stop_at: float | None = None,
    on_eval: Callable[[dict[str, object]], None] | None = None,
) -> Path:
    """Run (or resume) training; returns the directory holding ``best/``.

    ``stop_at`` is a UNIX time after which the loop checkpoints and exits
    cleanly (session budget); rerunning the same command resumes.
    """
    torch.set_num_threads(int(os.environ.get("TRAIN_THREADS", "2")))
    run_dir = out_root / recipe.run
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / "log.jsonl"
    (run_dir / "recipe.json").write_text(json.dumps(asdict(recipe), indent=2) + "\n")

    random.seed(recipe.seed)
    np.random.seed(recipe.seed)
    torch.manual_seed(recipe.seed)

    examples = load_prepared()
    train_ex = select(examples, "train", set(recipe.train_domains))
    aug_soft: dict[str, np.ndarray] = {}
    if recipe.augmented:
        if not recipe.soft_labels:
            raise ValueError("augmented texts carry teacher labels only: distil (--soft-labels) to use them")
        aug_ex, aug_soft = load_augmented(recipe.augmented)
        train_ex += aug_ex
    train_ex = reweight_domains(train_ex, recipe.domain_weights, random.Random(recipe.seed))
    val_ex = select(examples, "val")
    model, tok, save_best = build(recipe, out_root)
    pad_id = int(tok.pad_token_id or 0)
    review_domains = set(recipe.review_domains)
    train_texts = [tag_review(e.text) if e.domain in review_domains else e.text for e in train_ex]
    train_ids = encode(tok, train_texts, recipe.max_length)
    val_ids = encode(tok, [e.text for e in val_ex], recipe.max_length)
    y_train = torch.tensor([e.label for e in train_ex])
    y_val = [e.label for e in val_ex]
    soft = _soft_targets(recipe.soft_labels, train_ex, aug_soft)

    counts = np.bincount(y_train.numpy(), minlength=len(LABELS)).astype(np.float64)
    weights = (counts.sum() / (len(LABELS) * counts)) if recipe.class_weighting == "balanced" else np.ones(len(LABELS))
    class_w = torch.tensor(weights, dtype=torch.float32)

    steps_per_epoch = math.ceil(len(train_ex) / recipe.batch_size)
    total_steps = int(steps_per_epoch * recipe.epochs)
    no_decay = ("bias", "LayerNorm.weight")
    groups = [
        {
            "params": [p for n, p in model.named_parameters() if not any(k in n for k in no_decay)],
            "weight_decay": recipe.weight_decay,
        },
        {"params": [p for n, p in model.named_parameters() if any(k in n for k in no_decay)], "weight_decay": 0.0},
    ]
    optim = torch.optim.AdamW(groups, lr=recipe.lr)
    sched = get_linear_schedule_with_warmup(optim, int(total_steps * recipe.warmup_frac), total_steps)

    state_path = run_dir / "state.pt"
    step, best, bad_evals, done = 0, -1.0, 0, False
    if state_path.exists():
        st = torch.load(state_path, weights_only=False)
        model.load_state_dict(st["model"])
        optim.load_state_dict(st["optim"])
        sched.load_state_dict(st["sched"])
        step, best, bad_evals, done = st["step"], st["best"], st["bad_evals"], st.get("done", False)
        _log(log_path, {"event": "resume", "step": step, "best": best})
    else:
        _log(
            log_path,
            {
                "event": "start",
                "recipe": asdict(recipe),
                "n_train": len(train_ex),
                "n_val": len(val_ex),
                "steps_per_epoch": steps_per_epoch,
                "total_steps": total_steps,
                "class_weights": [round(float(w), 4) for w in weights],
            },
        )

    def save_state(finished: bool = False) -> None:
        tmp = state_path.with_suffix(".tmp")
        torch.save(
            {
                "model": model.state_dict(),
                "optim": optim.state_dict(),
                "sched": sched.state_dict(),
                "step": step,
                "best": best,
                "bad_evals": bad_evals,
                "done": finished,
            },
            tmp,
        )
        tmp.replace(state_path)

    def evaluate_and_maybe_save() -> bool:
        nonlocal best, bad_evals
        t0 = time.time()
        logits = predict_logits(model, val_ids, pad_id=pad_id)
        pred = logits.argmax(1).tolist()
        mr = macro_recall(y_val, pred)
        acc = float(np.mean(np.asarray(pred) == np.asarray(y_val)))
        improved = mr > best
        if improved:
            best, bad_evals = mr, 0
            save_best(run_dir / "best")
        else:
            bad_evals += 1
        rec: dict[str, object] = {
            "event": "eval",
            "step": step,
            "epoch": round(step / steps_per_epoch, 3),
            "val_macro_recall": round(mr, 4),
            "val_acc": round(acc, 4),
            "best": round(best, 4),
            "improved": improved,
            "eval_s": round(time.time() - t0, 1),
        }
        _log(log_path, rec)
        if on_eval:
            on_eval(rec)
        return bad_evals >= recipe.patience

    model.train()
    t_last, n_seen, loss_acc = time.time(), 0, 0.0
    while step < total_steps and not done:
        epoch = step // steps_per_epoch
        batches = bucket_batches(
            [len(s) for s in train_ids], recipe.batch_size, random.Random(f"{recipe.seed}-{epoch}")
        )
        for b in batches[step - epoch * steps_per_epoch :]:
            ids, mask = pad_batch([train_ids[i] for i in b], pad_id)
            logits = model(input_ids=ids, attention_mask=mask).logits
            loss = torch.nn.functional.cross_entropy(logits, y_train[b], weight=class_w)
            if soft is not None:
                t = recipe.kd_temperature
                target = torch.from_numpy(soft[b]) ** (1 / t)
                target = target / target.sum(1, keepdim=True)
                kd = (
                    torch.nn.functional.kl_div(torch.log_softmax(logits / t, -1), target, reduction="batchmean") * t * t
                )
                loss = (1 - recipe.kd_alpha) * loss + recipe.kd_alpha * kd
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optim.step()
            sched.step()
            optim.zero_grad(set_to_none=True)
            model.train()
            step += 1
            n_seen += len(b)
            loss_acc += loss.item()
            if step % 50 == 0:
                now = time.time()
                _log(
                    log_path,
                    {
                        "event": "train",
                        "step": step,
                        "loss": round(loss_acc / 50, 4),
                        "lr": sched.get_last_lr()[0],
                        "samples_per_s": round(n_seen / (now - t_last), 1),
                    },
                )
                t_last, n_seen, loss_acc = now, 0, 0.0
            stop_early = False
            if step % recipe.eval_every == 0 or step == total_steps:
                stop_early = evaluate_and_maybe_save()
                model.train()
            if step % recipe.ckpt_every == 0 or stop_early or step == total_steps:
                save_state(finished=stop_early or step == total_steps)
            if stop_early:
                _log(log_path, {"event": "early_stop", "step": step, "best": best})
                done = True
                break
            if stop_at is not None and time.time() > stop_at:
                save_state()
                _log(log_path, {"event": "paused", "step": step, "best": best})
                return run_dir
            if step >= total_steps:
                break
    if not (run_dir / "best").exists():
        evaluate_and_maybe_save()
    _log(log_path, {"event": "done", "step": step, "best": best})
    return run_dir


def iter_log(run_dir: Path) -> Iterator[dict[str, object]]:
    with (run_dir / "log.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            yield json.loads(line)
