"""CLI: ``python -m enrich.training {prepare,train,export,evaluate,card,teacher,all}``.

``all`` reproduces the shipped model from scratch (data -> fine-tune -> ONNX/int8
+ calibration -> evaluation report). Every step is resumable / idempotent.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m enrich.training")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("prepare", help="fetch vader sdist, build splits, write manifest")
    t = sub.add_parser("train", help="fine-tune MiniLM (resumable)")
    t.add_argument("--run", default="minilm-ft-v1")
    t.add_argument("--epochs", type=float, default=2.0)
    t.add_argument("--lr", type=float, default=5e-5)
    t.add_argument("--soft-labels", default=None, help="teacher soft labels (.npz) for distillation")
    t.add_argument("--stop-at", default=None, help="UTC HH:MM: checkpoint and exit after this time")
    t.add_argument("--init-from", default=None, help="warm start from this run's best/ weights (e.g. minilm-ft-v1)")
    t.add_argument("--kd-alpha", type=float, default=0.5, help="weight of the distillation loss (with --soft-labels)")
    t.add_argument("--seed", type=int, default=13, help="data order, dropout and head initialisation")
    e = sub.add_parser("export", help="ONNX export + int8 + temperature calibration")
    e.add_argument("--run", default="minilm-ft-v1")
    v = sub.add_parser("evaluate", help="per-domain report (EVALUATION.md/json)")
    v.add_argument("--run", default="minilm-ft-v1")
    te = sub.add_parser("teacher", help="fine-tune mpnet teacher and write soft labels (resumable)")
    te.add_argument("--stop-at", default=None)
    te.add_argument("--epochs", type=float, default=1.0, help="teacher fine-tune length (fixes the LR schedule)")
    so = sub.add_parser("soup", help="average the weights of finished runs into a new run (model soup)")
    so.add_argument("runs", nargs="+")
    so.add_argument("--out", required=True, help="name of the new run")
    sub.add_parser("card", help="render MODEL_CARD.md + experiments.jsonl from recorded artefacts")
    a = sub.add_parser("all", help="prepare + train + export + evaluate")
    a.add_argument("--run", default="minilm-ft-v1")
    args = p.parse_args(argv)

    def stop_at(hhmm: str | None) -> float | None:
        if not hhmm:
            return None
        today = time.strftime("%Y-%m-%d", time.gmtime())
        return time.mktime(time.strptime(f"{today} {hhmm}", "%Y-%m-%d %H:%M")) - time.timezone

    if args.cmd in ("prepare", "all"):
        from enrich.training.data import prepare

        print(json.dumps(prepare()["split_sizes"], indent=1))
    if args.cmd in ("train", "all"):
        from enrich.training.train import Recipe, train

        recipe = Recipe(run=args.run)
        if args.cmd == "train":
            recipe = Recipe(
                run=args.run,
                epochs=args.epochs,
                lr=args.lr,
                soft_labels=args.soft_labels,
                init_from=args.init_from,
                kd_alpha=args.kd_alpha,
                seed=args.seed,
            )
        train(recipe, stop_at=stop_at(getattr(args, "stop_at", None)))
    if args.cmd == "soup":
        from enrich.training.soup import soup

        soup(args.runs, args.out)
    if args.cmd in ("export", "all"):
        from enrich.training.export import export

        export(args.run)
    if args.cmd in ("evaluate", "all"):
        from enrich.training.evaluate import evaluate

        evaluate(args.run)
    if args.cmd in ("card", "all"):
        from enrich.training.card import render_card

        render_card()
    if args.cmd == "teacher":
        from enrich.training.teacher import run_teacher

        run_teacher(stop_at=stop_at(args.stop_at), epochs=args.epochs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
