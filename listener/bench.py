"""Sentiment throughput/latency bench: shipped ONNX classifier vs a transformers+torch pipeline.

Both run on the same inputs (TweetEval validation tweets) in one call. Cold
start and peak RSS are measured in fresh subprocesses so the parent's imports
do not distort them. The torch baseline is optional: without torch (runtime
install) it is reported as unavailable instead of failing.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# The shared corpora sit beside the checkout (../shared/corpora); LISTENER_CORPORA points elsewhere.
CORPORA = Path(os.environ.get("LISTENER_CORPORA", REPO.parent / "shared" / "corpora"))
CORPUS = CORPORA / "sentiment_tweeteval" / "val_text.txt"
DEFAULT_BATCHES = (1, 8, 32, 128)


def load_inputs(n: int) -> list[str]:
    """``n`` real tweets (TweetEval val, cycled if n > 2000)."""
    texts = [t for t in CORPUS.read_text("utf-8").splitlines() if t.strip()]
    return [texts[i % len(texts)] for i in range(n)]


def _percentile(values: Sequence[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def _time_batches(fn: Callable[[list[str]], Any], texts: list[str], batch_size: int) -> dict[str, float]:
    fn(texts[: min(batch_size, len(texts))])  # warm-up (graph init, allocator)
    lat: list[float] = []
    t0 = time.perf_counter()
    for start in range(0, len(texts), batch_size):
        t = time.perf_counter()
        fn(texts[start : start + batch_size])
        lat.append(time.perf_counter() - t)
    total = time.perf_counter() - t0
    return {
        "posts_per_s": round(len(texts) / total, 1),
        "p50_ms": round(1000 * statistics.median(lat), 2),
        "p95_ms": round(1000 * _percentile(lat, 0.95), 2),
        "batches": len(lat),
    }


def _peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM resets at exec; ru_maxrss would inherit the parent's high-water mark."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _hf_model_dir() -> Path | None:
    try:
        card = json.loads((REPO / "enrich" / "models" / "sentiment" / "model_card.json").read_text())
        run = card["export"]["run"]
    except (OSError, KeyError, ValueError):
        return None
    path = REPO / ".cache" / "train" / run / "best"
    return path if path.exists() else None


def _subprocess_json(code: str, timeout: float = 600) -> dict[str, Any]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(REPO))
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env, timeout=timeout
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    out["process_wall_s"] = round(wall, 3)
    return out


def _ours_worker(n: int) -> None:
    """Subprocess body: cold start (import+load+first result) then peak RSS after n posts at batch 32."""
    t0 = time.perf_counter()
    from enrich.sentiment import SentimentClassifier

    clf = SentimentClassifier()
    clf.classify(["first post of the day, loving it"])
    cold = time.perf_counter() - t0
    clf.classify(load_inputs(n), batch_size=32)
    rss = _peak_rss_mb()
    print(json.dumps({"cold_start_s": round(cold, 3), "peak_rss_mb": round(rss, 1)}))


def _baseline_worker(n: int, batch_sizes: Sequence[int], model_dir: str) -> None:
    """Subprocess body: transformers.pipeline('text-classification') on torch, same model and inputs."""
    t0 = time.perf_counter()
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    from enrich.textprep import normalise
    from enrich.training.model import register

    torch.set_num_threads(2)
    register()
    # sdpa: torch's fastest attention on CPU and transformers' default, so the baseline is not handicapped.
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, attn_implementation="sdpa")
    pipe = pipeline("text-classification", model=model, tokenizer=AutoTokenizer.from_pretrained(model_dir), device=-1)
    texts = [normalise(t) for t in load_inputs(n)]
    pipe(texts[:1], truncation=True, max_length=128)
    cold = time.perf_counter() - t0
    per_batch = {
        str(bs): _time_batches(functools.partial(pipe, batch_size=bs, truncation=True, max_length=128), texts, bs)
        for bs in batch_sizes
    }
    rss = _peak_rss_mb()
    print(
        json.dumps(
            {
                "per_batch": per_batch,
                "cold_start_s": round(cold, 3),
                "peak_rss_mb": round(rss, 1),
                "torch": torch.__version__,
                "note": "inputs pre-normalised; time = tokenise + infer",
            }
        )
    )


Sink = Callable[[list[str], list[Any]], None]


@contextlib.contextmanager
def sqlite_sink(texts: Sequence[str], model_version: str) -> Iterator[Sink]:
    """A throwaway SQLite store holding one mention per text; the sink saves a batch's results as enrichments.

    Storing is part of what `listener enrich` does per batch, so the end-to-end figure includes it.
    """
    from enrich.base import Enrichment
    from listener.types import Cursor, Mention, utcnow
    from storage import Store

    with tempfile.TemporaryDirectory() as tmp, Store.open(Path(tmp) / "bench.db") as store:
        now = utcnow()
        mentions = [
            Mention(
                source="bench", kind="rss", native_id=str(i), url=None, title=None, text=t, author=None, created_at=now
            )
            for i, t in enumerate(texts)
        ]
        store.save_batch("bench", mentions, Cursor())
        ids: dict[str, str] = {}
        for m in mentions:
            ids.setdefault(m.text, m.id)

        def sink(batch: list[str], results: list[Any]) -> None:
            store.save_enrichments(
                [
                    Enrichment(ids[t], "sentiment", model_version, r.as_dict())
                    for t, r in zip(batch, results, strict=True)
                ]
            )

        yield sink


def run_bench(
    n: int = 2000,
    batch_sizes: Sequence[int] = DEFAULT_BATCHES,
    baseline: bool = True,
    store: bool = True,
) -> dict[str, Any]:
    """Measure the shipped classifier (and optionally the torch pipeline) on the same ``n`` tweets."""
    from enrich.sentiment import SentimentClassifier

    texts = load_inputs(n)
    load_start = os.getloadavg()[0]
    clf = SentimentClassifier()
    per_batch = {
        str(bs): _time_batches(functools.partial(clf.classify, batch_size=bs), texts, bs) for bs in batch_sizes
    }
    # The other execution mode for comparison: per-row when the shipped default batches, and vice versa.
    alt = SentimentClassifier(per_row=not clf.per_row)
    per_batch_alt = {
        str(bs): _time_batches(functools.partial(alt.classify, batch_size=bs), texts, bs) for bs in batch_sizes
    }

    with contextlib.ExitStack() as stack:
        sink = stack.enter_context(sqlite_sink(texts, clf.version)) if store else None

        def end_to_end(batch: list[str]) -> None:
            results = clf.classify(batch, batch_size=32)
            if sink is not None:
                sink(batch, results)

        e2e = _time_batches(end_to_end, texts, 32) | {"store": sink is not None}

    result: dict[str, Any] = {
        "n": n,
        "inputs": "TweetEval sentiment validation tweets",
        "model_version": clf.version,
        "intra_op_threads": clf.model.intra_op_threads,
        "workers": clf.model.workers,
        "cpu_count": os.cpu_count(),
        "ours": {
            "per_row": clf.per_row,
            "per_batch": per_batch,
            "per_batch_alt": per_batch_alt,
            "alt_per_row": alt.per_row,
            "end_to_end_batch32": e2e,
        },
    }
    result["ours"].update(_subprocess_json(f"from listener.bench import _ours_worker; _ours_worker({n})"))
    model_dir = _hf_model_dir()
    if not baseline:
        result["baseline"] = {"available": False, "reason": "disabled"}
    elif importlib.util.find_spec("torch") is None or importlib.util.find_spec("transformers") is None:
        result["baseline"] = {
            "available": False,
            "reason": "torch/transformers not installed (install the [train] extra)",
        }
    elif model_dir is None:
        result["baseline"] = {"available": False, "reason": "HF-format fine-tuned model not found under .cache/train"}
    else:
        args = f"{n}, {list(batch_sizes)!r}, {str(model_dir)!r}"
        code = f"from listener.bench import _baseline_worker; _baseline_worker({args})"
        base = _subprocess_json(code, timeout=3600)
        result["baseline"] = {"available": "error" not in base, "model_dir": str(model_dir), **base}
    result["loadavg_1min"] = {"start": round(load_start, 2), "end": round(os.getloadavg()[0], 2)}
    return result


def format_bench(result: dict[str, Any]) -> str:
    """Human-readable table of a :func:`run_bench` result."""
    ours, base = result["ours"], result.get("baseline", {})
    alt_name = "per-row" if ours.get("alt_per_row") else "padded"
    alt = ours.get("per_batch_alt", ours.get("per_batch_padded", {}))  # older bench.json files: padded
    lines = [
        f"sentiment bench: {result['n']} posts ({result['inputs']}), model {result['model_version']}, "
        f"{result.get('workers', 1)} concurrent runs x {result['intra_op_threads']} onnxruntime thread(s)",
        "",
        "ours = shipped default ("
        + ("each post its own ONNX call" if ours.get("per_row") else "length-sorted padded batches")
        + f"); {alt_name} = the same model with per_row={ours.get('alt_per_row')};",
        "HF = transformers.pipeline('text-classification') on torch, same fine-tuned weights.",
        "",
        f"{'batch':>5} | {'ours posts/s':>12} | {'p50 ms':>8} | {'p95 ms':>8} | {alt_name + ' posts/s':>14} | "
        f"{'HF posts/s':>10} | {'HF p50 ms':>9} | {'HF p95 ms':>9} | ours/HF",
        "-" * 110,
    ]
    for bs, m in ours["per_batch"].items():
        b = base.get("per_batch", {}).get(bs) if base.get("available") else None
        hf = (
            f"{b['posts_per_s']:>10} | {b['p50_ms']:>9} | {b['p95_ms']:>9} | {m['posts_per_s'] / b['posts_per_s']:.1f}x"
            if b
            else f"{'n/a':>10} | {'':>9} | {'':>9} |"
        )
        other = alt.get(bs, {}).get("posts_per_s", "n/a")
        lines.append(f"{bs:>5} | {m['posts_per_s']:>12} | {m['p50_ms']:>8} | {m['p95_ms']:>8} | {other:>14} | {hf}")
    e2e = ours["end_to_end_batch32"]
    lines += [
        "",
        f"end-to-end at batch 32 (normalise+tokenise+infer{'+store in SQLite' if e2e['store'] else ''}): "
        f"{e2e['posts_per_s']} posts/s",
        f"cold start (import+load+first result, fresh process): ours {ours.get('cold_start_s', 'n/a')} s"
        + (f", HF pipeline {base.get('cold_start_s')} s" if base.get("available") else ""),
        f"peak RSS: ours {ours.get('peak_rss_mb', 'n/a')} MB"
        + (f", HF pipeline {base.get('peak_rss_mb')} MB" if base.get("available") else ""),
    ]
    if "loadavg_1min" in result:
        la = result["loadavg_1min"]
        lines.append(
            f"machine load average (1 min) during the run: {la['start']} → {la['end']} (other work skews figures)"
        )
    if not base.get("available"):
        lines.append(f"baseline unavailable: {base.get('reason') or base.get('error')}")
    return "\n".join(lines)


if __name__ == "__main__":
    # python -m listener.bench [N] [OUT.json]  (the `listener bench` CLI verb is wired by the lead)
    res = run_bench(n=int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
    print(format_bench(res))
    if len(sys.argv) > 2:
        Path(sys.argv[2]).write_text(json.dumps(res, indent=2) + "\n")
