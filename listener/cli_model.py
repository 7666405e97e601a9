"""Model and job verbs: `enrich`, `run`, `classify`, `bench`, `demo`."""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Annotated, BinaryIO

import typer

from enrich.base import ENRICH_BATCH
from listener.errors import UsageError


class StopFlag:
    """Set by SIGTERM/SIGINT so a long job finishes its current batch and stops cleanly."""

    def __init__(self) -> None:
        self.stopped = False

    def __call__(self) -> bool:
        return self.stopped

    def install(self) -> None:
        def handler(signum: int, frame: FrameType | None) -> None:
            if self.stopped:  # second signal: give up immediately
                raise KeyboardInterrupt
            self.stopped = True

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)


def run_enrichment(ctx: object, batch_size: int) -> int:
    """Enrich everything pending with a progress bar; Ctrl-C/SIGTERM stops after the current batch."""
    from listener.cli import _progress, console
    from listener.context import Context
    from listener.pipeline import default_stages, enrich_pending

    assert isinstance(ctx, Context)
    store = ctx.store()
    stages = default_stages(ctx.config(required=False), store)
    # each mention missing any stage goes through one batch, whatever it lacks, so the bar counts mentions
    pending = store.count_unenriched_any([(s.name, s.version) for s in stages])
    stop = StopFlag()
    stop.install()
    with _progress() as progress:
        task = progress.add_task("enriching", total=pending)
        done = enrich_pending(
            store, stages, batch_size=batch_size, should_stop=stop, progress=lambda n: progress.advance(task, n)
        )
    state = "stopped early; run again to resume" if stop.stopped else "done"
    console.print(
        f"enriched {done} of {pending} pending mention(s) with {', '.join(s.version for s in stages)} ({state})"
    )
    return done


def _read_lines(file: Path | None) -> Iterator[str]:
    handle: BinaryIO
    if file is not None:
        try:
            handle = file.open("rb")
        except OSError as exc:
            raise UsageError(f"cannot read {file}: {exc.strerror}") from None
    else:
        handle = sys.stdin.buffer
    with handle:
        for raw in handle:
            # Invalid UTF-8 must not crash or drop a line: undecodable bytes become U+FFFD.
            yield raw.decode("utf-8", errors="replace").rstrip("\r\n")


def register(app: typer.Typer) -> None:
    from listener.cli import _fetch, console, ctx_of

    @app.command()
    def enrich(
        typer_ctx: typer.Context,
        batch_size: Annotated[int, typer.Option(min=1, max=4096)] = ENRICH_BATCH,
    ) -> None:
        """Tag every stored mention that has no enrichment for the current model version (resumable)."""
        run_enrichment(ctx_of(typer_ctx), batch_size)

    @app.command()
    def run(
        typer_ctx: typer.Context,
        source: Annotated[list[str] | None, typer.Option("--source", "-s")] = None,
    ) -> None:
        """Fetch from sources, then enrich what is new."""
        ctx = ctx_of(typer_ctx)
        runs = _fetch(ctx, source or [])
        run_enrichment(ctx, ENRICH_BATCH)
        if any(r.status == "failed" for r in runs):
            raise typer.Exit(1)

    @app.command()
    def classify(
        file: Annotated[Path | None, typer.Option("--file", help="One text per line (default: stdin).")] = None,
        batch_size: Annotated[int, typer.Option(min=1, max=1024)] = 32,
    ) -> None:
        """Sentiment for texts, one JSON object per line: text, sentiment, score, scores, model."""
        from enrich.sentiment import MODEL_VERSION, SentimentClassifier

        classifier = SentimentClassifier()
        out = sys.stdout
        chunk: list[str] = []

        def flush() -> None:
            for text, result in zip(chunk, classifier.classify(chunk, batch_size=batch_size), strict=True):
                row = {
                    "text": text,
                    "sentiment": result.label,
                    "score": result.score,
                    "scores": result.scores,
                    "model": MODEL_VERSION,
                }
                if result.reason:
                    row["reason"] = result.reason
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
            out.flush()
            chunk.clear()

        for line in _read_lines(file):
            chunk.append(line)
            if len(chunk) >= 1024:
                flush()
        if chunk:
            flush()

    @app.command()
    def bench(
        n: Annotated[int, typer.Option(help="Number of posts to classify.")] = 2000,
        baseline: Annotated[bool, typer.Option(help="Also time the HF transformers pipeline (needs torch).")] = True,
        as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
        insight: Annotated[
            bool, typer.Option("--insight", help="Time the insight stages and clustering instead of sentiment.")
        ] = False,
    ) -> None:
        """Throughput/latency/memory of our enrichment vs the HF pipeline on the same model and inputs."""
        if insight:
            from listener.bench_insight import format_insight, run_insight_bench

            found = run_insight_bench(n=n)
            if as_json:
                sys.stdout.write(json.dumps(found, indent=2, default=str) + "\n")
            else:
                console.print(format_insight(found))
            return
        from listener.bench import format_bench, run_bench

        result = run_bench(n=n, baseline=baseline)
        if as_json:
            sys.stdout.write(json.dumps(result, indent=2, default=str) + "\n")
        else:
            console.print(format_bench(result))

    @app.command()
    def demo(
        typer_ctx: typer.Context,
        db: Annotated[Path, typer.Option(help="Where the demo database goes.")] = Path("demo.db"),
        fresh: Annotated[bool, typer.Option(help="Start from an empty demo database.")] = True,
        enrich_: Annotated[bool, typer.Option("--enrich/--no-enrich", help="Run sentiment on the demo data.")] = True,
    ) -> None:
        """Offline demo: replay bundled feeds from a local server, store, enrich, print a digest."""
        from listener.demo.runner import run_demo

        run_demo(db=db, fresh=fresh, enrich=enrich_, console=console)
