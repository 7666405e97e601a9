"""Insight verbs: `listener topics` (taxonomy counts, trend, aspect sentiment, emerging clusters),
`listener promote` (an emerging cluster becomes a taxonomy topic) and `listener questions` (top community
questions and what the community already solved).

Registered by `cli.py` with one line (`cli_insight.register(app)`); all heavy imports are lazy.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import timedelta
from typing import Annotated, Any

import typer


def topic_summary(store: Any, since: Any, until: Any = None) -> list[dict[str, Any]]:
    """Per topic: mentions, negative/positive aspect counts and the strongest evidence quote."""
    from listener.types import utcnow

    mentions = store.mentions_between(since, until or utcnow() + timedelta(seconds=1))
    found = store.enrichments_for([m.id for m in mentions], stage="topics")
    rows: dict[str, dict[str, Any]] = {}
    for m in mentions:
        for hit in (found.get(m.id, {}).get("topics") or {}).get("topics", []):
            row = rows.setdefault(
                hit["name"], {"topic": hit["name"], "mentions": 0, "sentiment": Counter(), "best": None}
            )
            row["mentions"] += 1
            label = (hit.get("sentiment") or {}).get("label")
            row["sentiment"][label or "unknown"] += 1
            if row["best"] is None or hit["score"] > row["best"][0]:
                row["best"] = (hit["score"], hit.get("evidence", ""), m.url)
    out = []
    for row in sorted(rows.values(), key=lambda r: -r["mentions"]):
        score, quote, url = row.pop("best")
        out.append({**row, "sentiment": dict(row["sentiment"]), "quote": quote, "url": url, "score": score})
    return out


def with_trend(summary: list[dict[str, Any]], previous: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each topic row gains `previous` (mentions in the window of the same length just before) and `trend`."""
    before = {row["topic"]: row["mentions"] for row in previous}
    out = []
    for row in summary:
        prev = before.get(row["topic"], 0)
        trend = "new" if prev == 0 else f"{row['mentions'] - prev:+d}"
        out.append({**row, "previous": prev, "trend": trend})
    return out


def register(app: typer.Typer) -> None:
    from listener.cli import console, ctx_of

    @app.command()
    def topics(
        typer_ctx: typer.Context,
        since: Annotated[str, typer.Option("--since", help="Window start: 7d, 24h or an ISO date.")] = "7d",
        emerging: Annotated[bool, typer.Option("--emerging", help="Also cluster mentions no topic covers.")] = False,
        as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    ) -> None:
        """What customers talk about: taxonomy topics with aspect sentiment, plus emerging themes."""
        from rich.table import Table

        from listener.context import parse_when
        from listener.types import utcnow

        ctx = ctx_of(typer_ctx)
        store = ctx.store()
        start = parse_when(since)
        assert start is not None
        span = utcnow() - start
        summary = with_trend(topic_summary(store, start), topic_summary(store, start - span, start))
        clusters: list[dict[str, Any]] = []
        if emerging:
            from enrich.emerging import emerging_topics, state_path_for

            target = ctx.database_target()
            state = state_path_for(target) if "://" not in target else None
            clusters = [c.as_dict() for c in emerging_topics(store, start, state_path=state)]
        if as_json:
            console.print_json(json.dumps({"topics": summary, "emerging": clusters}, default=str))
            return
        table = Table(title=f"Topics since {start:%Y-%m-%d %H:%M} UTC")
        for col in ("topic", "mentions", "trend", "neg / neu / pos", "strongest quote"):
            table.add_column(col)
        for row in summary:
            s = row["sentiment"]
            table.add_row(
                row["topic"],
                str(row["mentions"]),
                row["trend"],
                f"{s.get('negative', 0)} / {s.get('neutral', 0)} / {s.get('positive', 0)}",
                (row["quote"] or "")[:90],
            )
        console.print(table if summary else "no topic enrichments in this window (run `listener enrich`)")
        for c in clusters:
            tag = "new" if c["new"] else f"was {c['previous_size']}"
            console.print(f"[bold]{c['id']}[/] ({c['size']} mentions, {tag}): {', '.join(c['keywords'])}")
            for q in c["quotes"][:2]:
                console.print(f"   “{q['text'][:100]}”")
        if clusters and not as_json:
            console.print("Make one a topic: listener promote <id> --name <topic>")

    @app.command()
    def promote(
        typer_ctx: typer.Context,
        cluster_id: Annotated[str, typer.Argument(help="Emerging cluster id, as `listener topics --emerging` shows.")],
        name: Annotated[str, typer.Option("--name", help="Name of the new topic (lower case, _ or -).")],
        since: Annotated[str, typer.Option("--since", help="The window the cluster was found in.")] = "7d",
    ) -> None:
        """Make an emerging cluster a taxonomy topic: a [[topics]] entry in the config (seeds = its quotes)."""
        from enrich.emerging import emerging_topics, state_path_for
        from listener.context import parse_when
        from listener.errors import UsageError
        from listener.promote import promote_cluster

        ctx = ctx_of(typer_ctx)
        config = ctx.config()  # required: the taxonomy lives in the config file
        assert config.path is not None
        store = ctx.store()
        start = parse_when(since)
        assert start is not None
        target = ctx.database_target()
        state = state_path_for(target) if "://" not in target else None
        clusters = {c.id: c for c in emerging_topics(store, start, state_path=state)}
        if cluster_id not in clusters:
            known = ", ".join(sorted(clusters)) or "none"
            raise UsageError(f"no emerging cluster {cluster_id!r} since {since} (clusters now: {known})")
        topic = promote_cluster(config.path, clusters[cluster_id], name)
        console.print(
            f"added topic [bold]{topic.name}[/] to {config.path}: {len(topic.seeds)} seed quotes, "
            f"keywords {', '.join(topic.keywords) or '—'}.\nRun `listener enrich` to tag stored mentions with it."
        )

    @app.command()
    def questions(
        typer_ctx: typer.Context,
        since: Annotated[str, typer.Option("--since", help="Window start: 7d, 24h or an ISO date.")] = "30d",
        limit: Annotated[int, typer.Option("--limit", min=1, max=500)] = 20,
        solved: Annotated[
            bool, typer.Option("--solved", help="Only questions the community answered with a workaround.")
        ] = False,
        as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    ) -> None:
        """Top questions from forums/Q&A sources with their accepted or top-voted answers."""
        from rich.table import Table

        from enrich.knowledge import solved_by_community, top_questions
        from listener.context import parse_when

        store = ctx_of(typer_ctx).store()
        start = parse_when(since)
        assert start is not None
        qas = solved_by_community(store, start)[:limit] if solved else top_questions(store, start, limit)
        if as_json:
            console.print_json(json.dumps([qa.as_dict() for qa in qas], default=str))
            return
        if not qas:
            console.print("no forum questions in this window")
            return
        table = Table(title="Community questions" + (" solved with a workaround" if solved else ""))
        for col in ("question", "answers", "best answer", "workaround"):
            table.add_column(col)
        for qa in qas:
            table.add_row(
                qa.title[:80],
                str(qa.answers),
                f"{qa.how}: {qa.answer.url or qa.answer.id}" if qa.answer else "—",
                "yes" if qa.workaround else "",
            )
        console.print(table)
