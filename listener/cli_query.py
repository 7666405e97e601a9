"""Read-side verbs: `search`, `export` and `digest` (product teams and marketing)."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from listener.context import parse_period, parse_when
from listener.errors import UsageError
from listener.export import ExportFormat, csv_fields, export_mentions, rows_with_sentiment, write_rows
from listener.query import MentionQuery, run_query


class OutFormat(str, Enum):
    table = "table"
    json = "json"
    ndjson = "ndjson"
    csv = "csv"


class DigestFormat(str, Enum):
    md = "md"
    text = "text"
    html = "html"


SourceOpt = Annotated[list[str] | None, typer.Option("--source", "-s", help="Only these sources.")]
WatchOpt = Annotated[
    list[str] | None, typer.Option("--watch", "-w", help="Only mentions matching these watch queries.")
]
SinceOpt = Annotated[str | None, typer.Option(help="7d, 24h or an ISO date.")]
UntilOpt = Annotated[str | None, typer.Option(help="7d, 24h or an ISO date.")]
TopicOpt = Annotated[str | None, typer.Option(help="Only mentions tagged with this taxonomy topic.")]
IntentOpt = Annotated[str | None, typer.Option(help="complaint | question | feature_request | praise | other")]
StageOpt = Annotated[str | None, typer.Option(help="Journey stage, e.g. support, onboarding_use, advocacy_churn.")]
LangOpt = Annotated[str | None, typer.Option(help="ISO 639-1 language code, e.g. en, de.")]
SentimentOpt = Annotated[str | None, typer.Option(help="negative | neutral | positive")]
CanonicalOpt = Annotated[bool, typer.Option("--canonical-only", help="Skip near-duplicate copies.")]
SemanticOpt = Annotated[str | None, typer.Option(help="Rank by meaning: mentions most similar to this text.")]
SortOpt = Annotated[str, typer.Option(help="newest | relevance | engagement")]


def build_query(
    text: str | None,
    source: list[str] | None,
    watch: list[str] | None,
    since: str | None,
    until: str | None,
    topic: str | None,
    intent: str | None,
    stage: str | None,
    lang: str | None,
    sentiment: str | None,
    canonical_only: bool,
    semantic: str | None,
    sort: str,
    limit: int,
) -> MentionQuery:
    if sort not in ("newest", "relevance", "engagement"):
        raise UsageError("--sort must be newest, relevance or engagement")
    if sentiment is not None and sentiment not in ("negative", "neutral", "positive"):
        raise UsageError("--sentiment must be negative, neutral or positive")
    return MentionQuery(
        text=text,
        sources=tuple(source or ()),
        watches=tuple(watch or ()),
        since=parse_when(since),
        until=parse_when(until),
        sort=sort,
        limit=limit,
        topic=topic,
        intent=intent,
        stage=stage,
        lang=lang,
        sentiment=sentiment,
        canonical_only=canonical_only,
        semantic=semantic,
    )


def _print_table(console: Console, rows: list[dict[str, Any]], items: list[Any], title: str | None) -> None:
    table = Table(title=f"{len(rows)} mention(s)" + (f" for {title!r}" if title else ""), show_lines=True)
    for col in ("when", "source", "author", "text", "sentiment", "url"):
        table.add_column(col, overflow="fold")
    for r, item in zip(rows, items, strict=True):
        text = (item.snippet or item.mention.body).replace("\n", " ")
        if item.similarity is not None:  # semantic search: how close, then the text itself
            text = f"({item.similarity:.2f}) {text}"
        table.add_row(
            item.mention.created_at.strftime("%Y-%m-%d %H:%M"),
            r["source"],
            r["author"] or "",
            text[:240],
            r["sentiment"] or "",
            r["url"] or "",
        )
    console.print(table)


def register(app: typer.Typer) -> None:
    from listener.cli import console, ctx_of, err

    @app.command()
    def search(
        typer_ctx: typer.Context,
        query: Annotated[
            str | None, typer.Argument(help='Words, "phrases", OR, -exclusions. Omit to list newest.')
        ] = None,
        source: SourceOpt = None,
        watch: WatchOpt = None,
        since: SinceOpt = None,
        until: UntilOpt = None,
        topic: TopicOpt = None,
        intent: IntentOpt = None,
        stage: StageOpt = None,
        lang: LangOpt = None,
        sentiment: SentimentOpt = None,
        canonical_only: CanonicalOpt = False,
        semantic: SemanticOpt = None,
        sort: SortOpt = "newest",
        limit: Annotated[int, typer.Option(min=1, max=10_000)] = 20,
        fmt: Annotated[OutFormat, typer.Option("--format", "-f")] = OutFormat.table,
    ) -> None:
        """Search stored mentions: full text, filters on source/watch/time and on enrichment labels."""
        q = build_query(
            query,
            source,
            watch,
            since,
            until,
            topic,
            intent,
            stage,
            lang,
            sentiment,
            canonical_only,
            semantic,
            sort,
            limit,
        )
        store = ctx_of(typer_ctx).store()
        try:
            page = run_query(store, q)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        rows = rows_with_sentiment(store, page.items)
        if fmt is OutFormat.table:
            _print_table(console, rows, page.items, query or semantic)
        else:
            write_rows(rows, fmt, sys.stdout, header=True, fields=csv_fields(semantic is not None))
        if page.ranked_newest:
            newest = page.ranked_newest
            err.print(f"note: relevance ranked the newest {newest:,} matches; use --since to rank older ones")

    @app.command()
    def export(
        typer_ctx: typer.Context,
        query: Annotated[str | None, typer.Argument(help="Same query language as search; omit for everything.")] = None,
        source: SourceOpt = None,
        watch: WatchOpt = None,
        since: SinceOpt = None,
        until: UntilOpt = None,
        topic: TopicOpt = None,
        intent: IntentOpt = None,
        stage: StageOpt = None,
        lang: LangOpt = None,
        sentiment: SentimentOpt = None,
        canonical_only: CanonicalOpt = False,
        fmt: Annotated[ExportFormat, typer.Option("--format", "-f")] = ExportFormat.csv,
        out: Annotated[
            Path | None, typer.Option("--out", "-o", help="File to write (default: stdout; parquet needs a file).")
        ] = None,
    ) -> None:
        """Every matching mention, page by page in constant memory: csv, json, ndjson or parquet."""
        q = build_query(
            query,
            source,
            watch,
            since,
            until,
            topic,
            intent,
            stage,
            lang,
            sentiment,
            canonical_only,
            None,
            "newest",
            1000,
        )
        store = ctx_of(typer_ctx).store()
        try:
            count = export_mentions(store, q, fmt, out)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if out is not None:
            console.print(f"wrote {count} mention(s) to {out}")

    @app.command()
    def digest(
        typer_ctx: typer.Context,
        since: Annotated[str, typer.Option(help="Period length: 24h, 7d …")] = "24h",
        until: Annotated[
            str | None, typer.Option(help="End of period (ISO date or duration ago); default now.")
        ] = None,
        fmt: Annotated[DigestFormat, typer.Option("--format", "-f")] = DigestFormat.md,
        out: Annotated[Path | None, typer.Option("--out", "-o", help="Write to this file instead of stdout.")] = None,
        lang: Annotated[
            list[str] | None,
            typer.Option("--lang", help="Only mentions in this language (ISO 639-1, repeatable); undetected kept."),
        ] = None,
    ) -> None:
        """What customers said in the period: counts, sentiment, quotes with links, source health."""
        from listener.digest import build_digest, render_markdown, render_text

        ctx = ctx_of(typer_ctx)
        end = parse_when(until)
        if fmt is DigestFormat.html:
            from listener.cli_digest import write_html_digest

            path = write_html_digest(
                ctx.store(), ctx.config(required=False), out or Path("digest.html"), parse_period(since), end,
                languages=lang or (),
            )
            console.print(f"wrote {path}")
            return
        d = build_digest(
            ctx.store(), ctx.config(required=False), until=end, period=parse_period(since), languages=lang or ()
        )
        text = render_markdown(d) if fmt is DigestFormat.md else render_text(d)
        if out:
            out.write_text(text, encoding="utf-8")
            console.print(f"wrote {out}")
        else:
            sys.stdout.write(text)
