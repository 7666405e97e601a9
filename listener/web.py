"""A small server-rendered web UI over the same store: search with filters, a mention, source health.

No JavaScript and no external assets: HTML + inline CSS, a server-drawn SVG chart of volume by
sentiment, readable on a laptop and a phone. Jinja2 autoescapes every piece of user content, and
only http(s) links become hrefs. Search goes through `run_query`, like the API and the CLI. Bound
beyond loopback (a token is set), a browser logs in once at /login; the token then travels in an
HttpOnly, SameSite=Strict cookie, never in a URL.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup, escape

from listener.api import TOKEN_COOKIE, presented_token, token_ok
from listener.config import Config
from listener.context import parse_when
from listener.digest import safe_url
from listener.errors import UsageError
from listener.query import MentionQuery, run_query, thread_of, volume
from storage import Store

TEMPLATES = Environment(
    loader=FileSystemLoader(Path(__file__).with_name("web_templates")),
    autoescape=select_autoescape(["html"], default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
SENTIMENT_COLOURS = {"negative": "#c62828", "neutral": "#8c959f", "positive": "#2e7d32", "unknown": "#d0c4bc"}
BAR_COLOURS = {**SENTIMENT_COLOURS, "all": "#54aeff"}
PERIODS = ("24h", "7d", "30d", "90d", "365d")
SORTS = ("newest", "relevance", "engagement")
PAGE = 50
CHART_DAYS = 60
CHART_SPLIT_MAX = 500_000
"""Above this many mentions in the chart's window, bars are plain volume (the split by sentiment is one GROUP BY
over the window's mentions and their labels: ~75 ms per 80k mentions)."""
CHART_TTL_S = 60.0
"""The chart counts a whole period; it is recomputed at most once a minute per (period, watch, source)."""


def highlight(snippet: str | None, fallback: str) -> Markup:
    """Storage marks FTS matches with [brackets]; escape everything, then turn the marks into <mark>."""
    if not snippet:
        text = fallback if len(fallback) <= 400 else fallback[:400].rsplit(" ", 1)[0] + " …"
        return Markup(escape(text))
    out = str(escape(snippet)).replace("[", "<mark>").replace("]", "</mark>")
    return Markup(out)


def volume_chart(days: Sequence[str], series: dict[str, dict[str, int]], width: int = 640, height: int = 120) -> Markup:
    """Stacked bars per day by sentiment, as inline SVG (no JS). Day labels are HTML, so they stay readable."""
    totals = [sum(series[s].get(d, 0) for s in series) for d in days]
    peak = max(totals, default=0) or 1
    bar = width / max(len(days), 1)
    parts = [
        f'<svg viewBox="0 0 {width} {height}" width="100%" height="{height}" preserveAspectRatio="none" '
        f'role="img" aria-label="mentions per day by sentiment">'
    ]
    for i, day in enumerate(days):
        y = float(height)
        for label in ("negative", "neutral", "positive", "unknown", "all"):
            n = series.get(label, {}).get(day, 0)
            if not n:
                continue
            h = n / peak * (height - 4)
            y -= h
            parts.append(
                f'<rect x="{i * bar + bar * 0.1:.1f}" y="{y:.1f}" width="{bar * 0.8:.1f}" height="{h:.1f}" '
                f'fill="{BAR_COLOURS[label]}"><title>{escape(day)}: {n} {label}</title></rect>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))


class _ChartCache:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._data: dict[tuple[Any, ...], tuple[float, Any]] = {}

    def get(self, key: tuple[Any, ...], compute: Any) -> Any:
        now = time.monotonic()
        with self._lock:
            hit = self._data.get(key)
            if hit and now - hit[0] < CHART_TTL_S:
                return hit[1]
        value = compute()
        with self._lock:
            if len(self._data) > 64:
                self._data.clear()
            self._data[key] = (now, value)
        return value


def _start(since: str) -> datetime | None:
    try:
        return parse_when(since or None)
    except OverflowError:
        raise UsageError(f"{since!r} is too far back") from None


def safe_next(target: str | None) -> str:
    """Where to go after logging in: a path on this site only (never `//host` or `https://…`)."""
    target = (target or "").strip()
    if not target.startswith("/") or target.startswith(("//", "/\\")) or any(ord(c) < 32 for c in target):
        return "/"
    return target


async def _form(request: Request, limit: int = 4096) -> dict[str, str]:
    """A small urlencoded form body (read up to `limit` bytes; more is a 413, not a memory problem)."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(413, "form too large")
    return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items()}


def mount_ui(app: FastAPI, store: Store, config: Config, token: str | None) -> None:
    """The HTML pages. With a token, a browser without the login cookie is sent to /login first."""
    cache = _ChartCache()
    sources = [s.name for s in config.sources] or sorted({s.source for s in store.source_states()})
    watches = [w.name for w in config.watches]

    def require_login(request: Request) -> None:
        if not token_ok(presented_token(request), token):
            here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            raise HTTPException(303, "log in first", headers={"Location": "/login?" + urlencode({"next": here})})

    auth = [Depends(require_login)]

    def render(name: str, **context: Any) -> HTMLResponse:
        template = TEMPLATES.get_template(name)
        html = template.render(safe_url=safe_url, highlight=highlight, login_required=token is not None, **context)
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})

    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    def login_form(request: Request, next: str = "/") -> Response:
        if token is None or token_ok(presented_token(request), token):
            return RedirectResponse(safe_next(next), status_code=303)
        return render("login.html", next=safe_next(next), error=None, logged_out=True)

    @app.post("/login", response_class=HTMLResponse, include_in_schema=False)
    async def login(request: Request) -> Response:
        """Check the token once, then keep it in an HttpOnly, SameSite=Strict cookie (Secure over https)."""
        form = await _form(request)
        target = safe_next(form.get("next"))
        if token is None:
            return RedirectResponse(target, status_code=303)
        if not form.get("token") or not token_ok(form["token"], token):
            page = render(
                "login.html",
                next=target,
                error="That token is not the one this server was started with.",
                logged_out=True,
            )
            page.status_code = 401
            return page
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            TOKEN_COOKIE, token, httponly=True, samesite="strict", secure=request.url.scheme == "https", path="/"
        )
        return response

    @app.post("/logout", include_in_schema=False)
    def logout(request: Request) -> Response:
        if request.headers.get("sec-fetch-site") == "cross-site":  # another site cannot log the user out
            raise HTTPException(403, "cross-site logout refused")
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(TOKEN_COOKIE, path="/", httponly=True, samesite="strict")
        return response

    def chart(start: datetime, end: datetime, watch: str, source: str) -> dict[str, Any]:
        first = max(start, end - timedelta(days=CHART_DAYS - 1))
        first = first.replace(hour=0, minute=0, second=0, microsecond=0)
        narrow = {"sources": [source] if source else (), "watches": [watch] if watch else ()}
        total, raw = volume(store, first, end, "day", "none", **narrow)  # COUNTs only
        split = 0 < total <= CHART_SPLIT_MAX
        if split:
            total, raw = volume(store, first, end, "day", "sentiment", **narrow)
        series = {label: {k[:10]: n for k, n in counts.items()} for label, counts in raw.items()}
        days = [(first + timedelta(days=d)).strftime("%Y-%m-%d") for d in range((end - first).days + 1)]
        return {"svg": volume_chart(days, series), "total": total, "days": days, "split": split}

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
        items: list[Any] = []
        next_after, ranked_newest = None, None
        start = None
        try:
            start = _start(since)
            page = run_query(
                store,
                MentionQuery(
                    text=q.strip() or None,
                    sources=(source,) if source else (),
                    watches=(watch,) if watch else (),
                    since=start,
                    sort=sort if sort in SORTS else "newest",
                    limit=PAGE,
                    after=after or None,
                    sentiment=sentiment if sentiment in SENTIMENT_COLOURS else None,
                ),
            )
            items, next_after, ranked_newest = page.items, page.next_after, page.ranked_newest
        except (UsageError, ValueError) as exc:
            error = str(exc)
        labels = store.enrichments_for([i.id for i in items], stage="sentiment") if items else {}
        rows = [(i, (labels.get(i.id, {}).get("sentiment") or {}).get("label")) for i in items]
        end = datetime.now(UTC)
        chart_start = start or end - timedelta(days=30)
        volume_data = cache.get((since, watch, source), lambda: chart(chart_start, end, watch, source))
        params = {"q": q, "source": source, "watch": watch, "since": since, "sentiment": sentiment, "sort": sort}
        return render(
            "index.html",
            rows=rows,
            error=error,
            params=params,
            first_page=not after,
            next_after=next_after,
            ranked_newest=ranked_newest,
            sources=sources,
            watches=watches,
            periods=PERIODS if since in PERIODS or not since else (*PERIODS, since),
            sorts=SORTS,
            chart=volume_data,
            colours=SENTIMENT_COLOURS,
            split_max=CHART_SPLIT_MAX,
        )

    @app.get("/m/{mention_id}", response_class=HTMLResponse, dependencies=auth, include_in_schema=False)
    def mention_page(mention_id: str) -> HTMLResponse:
        m = store.get_mention(mention_id)
        if m is None:
            page = render("not_found.html", message="No mention with this id (it may have been purged).")
            page.status_code = 404
            return page
        enrichments = store.enrichments_for([mention_id]).get(mention_id, {})
        label = (enrichments.get("sentiment") or {}).get("label")
        return render(
            "mention.html",
            m=m,
            mention_id=mention_id,
            enrichments=enrichments,
            label=label,
            colours=SENTIMENT_COLOURS,
            thread=thread_of(store, m, limit=20),
        )

    @app.get("/sources", response_class=HTMLResponse, dependencies=auth, include_in_schema=False)
    def sources_page() -> HTMLResponse:
        states = {s.source: s for s in store.source_states()}
        configured = {s.name: s for s in config.sources}
        names = [*configured, *sorted(n for n in states if n not in configured)]
        rows = [(name, configured.get(name), states.get(name)) for name in names]
        return render("sources.html", rows=rows)
