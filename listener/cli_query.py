"""Read-side verbs: `search` and `digest` (product teams and marketing)."""

from __future__ import annotations

import csv
import io
import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from listener.context import parse_period, parse_when
from listener.errors import UsageError


class OutFormat(str, Enum):
    table = "table"
    json = "json"
    ndjson = "ndjson"
    csv = "csv"


class DigestFormat(str, Enum):
    md = "md"
    text = "text"
    html = "html"


CSV_FIELDS = (
    "id",
    "source",
    "kind",
    "created_at",
    "author",
    "title",
    "text",
    "url",
    "score",
    "rating",
    "matched",
    "sentiment",
)


def _row(item: Any, sentiment: str | None) -> dict[str, Any]:
    data = item.mention.to_dict()
    data["id"] = item.id
    data["sentiment"] = sentiment
    if item.snippet:
        data["snippet"] = item.snippet
    return data


def register(app: typer.Typer) -> None:
    from listener.cli import console, ctx_of

    @app.command()
    def search(
        typer_ctx: typer.Context,
        query: Annotated[
            str | None, typer.Argument(help='Words, "phrases", OR, -exclusions. Omit to list newest.')
        ] = None,
        source: Annotated[list[str] | None, typer.Option("--source", "-s", help="Only these sources.")] = None,
        watch: Annotated[
            list[str] | None, typer.Option("--watch", "-w", help="Only mentions matching these watch queries.")
        ] = None,
        since: Annotated[str | None, typer.Option(help="7d, 24h or an ISO date.")] = None,
        until: Annotated[str | None, typer.Option(help="7d, 24h or an ISO date.")] = None,
        sort: Annotated[str, typer.Option(help="newest | relevance | engagement")] = "newest",
        limit: Annotated[int, typer.Option(min=1, max=10_000)] = 20,
        fmt: Annotated[OutFormat, typer.Option("--format", "-f")] = OutFormat.table,
    ) -> None:
        """Full-text search over stored mentions."""
        if sort not in ("newest", "relevance", "engagement"):
            raise UsageError("--sort must be newest, relevance or engagement")
        store = ctx_of(typer_ctx).store()
        try:
            page = store.search(
                query,
                sources=source or (),
                watches=watch or (),
                since=parse_when(since),
                until=parse_when(until),
                limit=limit,
                sort=sort,
            )
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        ids = [i.id for i in page.items]
        enrich = store.enrichments_for(ids, stage="sentiment") if ids else {}
        rows = [_row(i, (enrich.get(i.id, {}).get("sentiment") or {}).get("label")) for i in page.items]
        if fmt is OutFormat.json:
            sys.stdout.write(json.dumps(rows, ensure_ascii=False, indent=2, default=str) + "\n")
        elif fmt is OutFormat.ndjson:
            for r in rows:
                sys.stdout.write(json.dumps(r, ensure_ascii=False, default=str) + "\n")
        elif fmt is OutFormat.csv:
            buf = io.StringIO()
            writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore")
            writer.writeheader()
            for r in rows:
                writer.writerow({**r, "matched": ";".join(r["matched"])})
            sys.stdout.write(buf.getvalue())
        else:
            table = Table(title=f"{len(rows)} mention(s)" + (f" for {query!r}" if query else ""), show_lines=True)
            for col in ("when", "source", "author", "text", "sentiment", "url"):
                table.add_column(col, overflow="fold")
            for r, item in zip(rows, page.items, strict=True):
                text = (item.snippet or item.mention.body).replace("\n", " ")
                table.add_row(
                    item.mention.created_at.strftime("%Y-%m-%d %H:%M"),
                    r["source"],
                    r["author"] or "",
                    text[:240],
                    r["sentiment"] or "",
                    r["url"] or "",
                )
            console.print(table)

    @app.command()
    def digest(
        typer_ctx: typer.Context,
        since: Annotated[str, typer.Option(help="Period length: 24h, 7d …")] = "24h",
        until: Annotated[
            str | None, typer.Option(help="End of period (ISO date or duration ago); default now.")
        ] = None,
        fmt: Annotated[DigestFormat, typer.Option("--format", "-f")] = DigestFormat.md,
        out: Annotated[Path | None, typer.Option("--out", "-o", help="Write to this file instead of stdout.")] = None,
    ) -> None:
        """What customers said in the period: counts, sentiment, quotes with links, source health."""
        from listener.digest import build_digest, render_markdown, render_text

        ctx = ctx_of(typer_ctx)
        end = parse_when(until)
        if fmt is DigestFormat.html:
            from listener.cli_digest import write_html_digest

            path = write_html_digest(
                ctx.store(), ctx.config(required=False), out or Path("digest.html"), parse_period(since), end
            )
            console.print(f"wrote {path}")
            return
        d = build_digest(ctx.store(), ctx.config(required=False), until=end, period=parse_period(since))
        text = render_markdown(d) if fmt is DigestFormat.md else render_text(d)
        if out:
            out.write_text(text, encoding="utf-8")
            console.print(f"wrote {out}")
        else:
            sys.stdout.write(text)
