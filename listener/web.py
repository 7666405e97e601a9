"""A small server-rendered web UI over the same store: search with filters, a mention, source health.

No JavaScript framework and no external assets: HTML + inline CSS, a server-drawn SVG chart of
volume by sentiment, readable on a laptop and a phone. Jinja2 autoescapes every piece of user content,
and only http(s) links become hrefs.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.params import Depends
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup, escape

from listener.config import Config
from listener.context import parse_when
from listener.digest import safe_url
from listener.errors import UsageError
from storage import Store

TEMPLATES = Environment(
    loader=FileSystemLoader(Path(__file__).with_name("web_templates")),
    autoescape=select_autoescape(["html"], default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
SENTIMENT_COLOURS = {"positive": "#2e7d32", "neutral": "#9e9e9e", "negative": "#c62828", "unknown": "#d7ccc8"}


def highlight(snippet: str | None, fallback: str) -> Markup:
    """Storage marks FTS matches with [brackets]; escape everything, then turn the marks into <mark>."""
    if not snippet:
        return Markup(escape(fallback[:400]))
    out = str(escape(snippet)).replace("[", "<mark>").replace("]", "</mark>")
    return Markup(out)


def volume_chart(days: list[str], series: dict[str, Counter[str]], width: int = 640, height: int = 120) -> Markup:
    """Stacked bars per day by sentiment, as inline SVG (no JS, no external hosting)."""
    totals = [sum(series[s][d] for s in series) for d in days]
    peak = max(totals, default=0) or 1
    bar = width / max(len(days), 1)
    parts = [
        f'<svg viewBox="0 0 {width} {height + 16}" width="100%" role="img" aria-label="mentions per day by sentiment">'
    ]
    for i, day in enumerate(days):
        y = float(height)
        for label in ("negative", "neutral", "positive", "unknown"):
            n = series.get(label, Counter())[day]
            if not n:
                continue
            h = n / peak * height
            y -= h
            parts.append(
                f'<rect x="{i * bar + 1:.1f}" y="{y:.1f}" width="{bar - 2:.1f}" height="{h:.1f}" '
                f'fill="{SENTIMENT_COLOURS[label]}"><title>{escape(day)}: {n} {label}</title></rect>'
            )
        if len(days) <= 16 or i % max(len(days) // 8, 1) == 0:
            parts.append(
                f'<text x="{i * bar + bar / 2:.1f}" y="{height + 12}" font-size="9" text-anchor="middle">'
                f"{escape(day[5:])}</text>"
            )
    parts.append("</svg>")
    return Markup("".join(parts))


def mount_ui(app: FastAPI, store: Store, config: Config, auth: list[Depends]) -> None:
    def render(name: str, **context: Any) -> HTMLResponse:
        template = TEMPLATES.get_template(name)
        return HTMLResponse(template.render(safe_url=safe_url, highlight=highlight, **context))

    @app.get("/", response_class=HTMLResponse, dependencies=auth, include_in_schema=False)
    def home(
        request: Request,
        q: str = "",
        source: str = "",
        watch: str = "",
        since: str = "30d",
        sentiment: str = "",
        sort: str = "newest",
        after: str | None = None,
    ) -> HTMLResponse:
        error = None
        try:
            start = parse_when(since or None)
        except UsageError as exc:
            start, error = None, str(exc)
        items: list[Any] = []
        next_after = None
        if error is None:
            try:
                page = store.search(
                    q or None,
                    sources=[source] if source else (),
                    watches=[watch] if watch else (),
                    since=start,
                    limit=50,
                    after=after,
                    sort=sort if sort in ("newest", "relevance", "engagement") else "newest",
                )
                items, next_after = page.items, page.next_after
            except ValueError as exc:
                error = str(exc)
        labels = store.enrichments_for([i.id for i in items], stage="sentiment") if items else {}
        rows = [(i, (labels.get(i.id, {}).get("sentiment") or {}).get("label")) for i in items]
        if sentiment:
            rows = [(i, s) for i, s in rows if s == sentiment]
        end = datetime.now(UTC)
        chart_start = start or end - timedelta(days=30)
        chart_mentions = store.mentions_between(chart_start, end, watches=[watch] if watch else (), limit=20000)
        chart_labels = (
            store.enrichments_for([m.id for m in chart_mentions], stage="sentiment") if chart_mentions else {}
        )
        days = [(chart_start + timedelta(days=d)).strftime("%Y-%m-%d") for d in range((end - chart_start).days + 1)][
            -60:
        ]
        series: dict[str, Counter[str]] = {}
        for m in chart_mentions:
            label = (chart_labels.get(m.id, {}).get("sentiment") or {}).get("label") or "unknown"
            series.setdefault(label, Counter())[m.created_at.strftime("%Y-%m-%d")] += 1
        params = {"q": q, "source": source, "watch": watch, "since": since, "sentiment": sentiment, "sort": sort}
        return render(
            "index.html",
            rows=rows,
            error=error,
            params=params,
            next_after=next_after,
            sources=[s.name for s in config.sources] or sorted({s.source for s in store.source_states()}),
            watches=[w.name for w in config.watches],
            chart=volume_chart(days, series),
            colours=SENTIMENT_COLOURS,
        )

    @app.get("/m/{mention_id}", response_class=HTMLResponse, dependencies=auth, include_in_schema=False)
    def mention_page(mention_id: str) -> HTMLResponse:
        m = store.get_mention(mention_id)
        if m is None:
            raise HTTPException(404, "no such mention")
        enrichments = store.enrichments_for([mention_id]).get(mention_id, {})
        return render("mention.html", m=m, mention_id=mention_id, enrichments=enrichments)

    @app.get("/sources", response_class=HTMLResponse, dependencies=auth, include_in_schema=False)
    def sources_page() -> HTMLResponse:
        return render("sources.html", states=store.source_states(), configured={s.name: s for s in config.sources})
