"""Delivery verbs: `send-digest` (configured team digests to email/Slack/webhooks/files) and `alerts`.

`write_html_digest` is what the `digest` verb calls for `--format html`, so the standalone file and
the email come from the same builder and template.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from listener.config import Config
from listener.context import parse_period, parse_when
from listener.errors import UsageError
from storage import Store


def write_html_digest(store: Store, config: Config, out_path: Path, since: timedelta | datetime,
                      until: datetime | None = None, languages: Sequence[str] = ()) -> Path:
    """Standalone HTML digest (chart as a data: URI) for `listener digest --format html --out FILE`.

    `since` is a period length (24h before `until`) or a start time.
    """
    from listener.digest_html import build_email_digest, render_standalone

    if isinstance(since, datetime):
        ed = build_email_digest(store, config, since=since, until=until, languages=languages)
    else:
        ed = build_email_digest(store, config, until=until, period=since, languages=languages)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(render_standalone(ed), encoding="utf-8")
    return out_path


def register(app: typer.Typer) -> None:
    from listener.cli import console, ctx_of, err

    @app.command("send-digest")
    def send_digest(
        typer_ctx: typer.Context,
        name: Annotated[list[str] | None, typer.Option("--name", "-n", help="Only the digest with this name.")] = None,
        since: Annotated[str | None, typer.Option(help="Period length (default: the config's since).")] = None,
        until: Annotated[str | None, typer.Option(help="End of period (ISO date or duration ago).")] = None,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be sent; send nothing.")] = False,
    ) -> None:
        """Build each configured team digest and deliver it (SMTP, Slack, webhook, file)."""
        from listener.delivery import digest_jobs, digest_outgoing, send_all
        from listener.digest_html import build_email_digest

        ctx = ctx_of(typer_ctx)
        config = ctx.config()
        jobs = digest_jobs(config)
        if not jobs:
            raise UsageError('no digest configured: add a "digest" table array to the config with a name and '
                             'deliver targets, e.g. kind = "file", path = "digest-{date}.html"')
        known = {j.name for j in jobs}
        unknown = sorted(set(name or ()) - known)
        if unknown:
            raise UsageError(f"unknown digest(s) {', '.join(unknown)} (configured: {', '.join(sorted(known))})")
        end = parse_when(until)
        failed = False
        for job in jobs:
            if name and job.name not in name:
                continue
            ed = build_email_digest(ctx.store(), config, until=end, period=parse_period(since) if since else job.since,
                                    watches=job.watches, name=job.name, link=job.link, topics=job.topics,
                                    languages=job.languages)
            if dry_run:
                out = digest_outgoing(ed)
                console.print(f"[bold]{escape(job.name)}[/]: {escape(out.subject)}", highlight=False)
                console.print(f"  html {len(out.html or '')} chars, text {len(out.text)} chars, "
                              f"chart {sum(map(len, out.images.values()))} bytes", highlight=False)
                for t in job.targets:
                    console.print(f"  would deliver to {escape(t.describe())}", highlight=False)
                if not job.targets:
                    console.print("  [yellow]no deliver targets configured[/]")
                continue
            if not job.targets:
                err.print(f"[yellow]warning[/]: digest {escape(repr(job.name))} has no deliver targets")
                continue
            for r in send_all(digest_outgoing(ed), job.targets, default_format=job.format):
                mark = "[green]ok[/]" if r.ok else "[red]failed[/]"
                (console if r.ok else err).print(f"{escape(job.name)} → {escape(r.target)}: {mark} {escape(r.detail)}",
                                                 highlight=False)
                failed |= not r.ok
        if failed:
            raise typer.Exit(1)

    @app.command("alerts")
    def alerts(
        typer_ctx: typer.Context,
        since: Annotated[str, typer.Option(help="Show alerts newer than this: 7d, 24h or an ISO date.")] = "7d",
        check: Annotated[bool, typer.Option("--check", help="Run spike and emerging-topic detection now "
                                                           "(records and delivers).")] = False,
    ) -> None:
        """Recent alerts (spikes, new topics growing fast: what crossed what, where they were sent)."""
        from listener.alerts import AlertHistory, check_alerts
        from listener.alerts_emerging import check_emerging_alerts

        ctx = ctx_of(typer_ctx)
        config = ctx.config(required=check)
        store = ctx.store()
        history = AlertHistory.open(store, config)
        if check:
            fired = check_alerts(store, config, history=history)
            fired += check_emerging_alerts(store, config, history=history)
            names = ", ".join(a.title for a in fired)
            console.print(f"{len(fired)} new alert(s)" + (f": {escape(names)}" if fired else ""), highlight=False)
        start = parse_when(since)
        assert start is not None
        recent = history.since(start)
        table = Table(title=escape(f"{len(recent)} alert(s) since {start:%Y-%m-%d %H:%M} UTC ({store.display_url})"))
        for col in ("when (UTC)", "about", "what crossed", "delivered", "link"):
            table.add_column(col, overflow="fold")
        for a in recent:
            sent = ", ".join(("ok " if d.get("ok") else "FAILED ") + str(d.get("target", "")) for d in a.deliveries)
            crossed = "; ".join(s.describe() for s in a.signals)
            cells = (a.title, crossed, sent or "not delivered (no targets)", a.link or "")
            table.add_row(f"{a.at:%Y-%m-%d %H:%M}", *map(escape, cells))
        console.print(table)
