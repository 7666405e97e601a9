"""REST API for product teams: search mentions, read one with its enrichments, stats over time, source health.

Read-only. Bound to 127.0.0.1 by default; bound anywhere else it requires `Authorization: Bearer <token>`
(token from an environment variable) for every route except /healthz. Parameters are validated (422 with a
clear message), page size is capped, pagination is keyset (`after` token from the previous page).
"""

from __future__ import annotations

import hmac
import io
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response

from listener import __version__
from listener.config import Config
from listener.export import rows_with_sentiment, write_rows
from listener.query import MentionQuery, run_query
from listener.types import SOURCE_KINDS
from storage import SearchPage, Store

MAX_PAGE = 500


class Sort(str, Enum):
    newest = "newest"
    relevance = "relevance"
    engagement = "engagement"


class Format(str, Enum):
    json = "json"
    ndjson = "ndjson"
    csv = "csv"


class Bucket(str, Enum):
    hour = "hour"
    day = "day"
    week = "week"


class Sentiment(str, Enum):
    negative = "negative"
    neutral = "neutral"
    positive = "positive"


class GroupBy(str, Enum):
    none = "none"
    source = "source"
    kind = "kind"
    watch = "watch"
    sentiment = "sentiment"


def _bucket_start(when: datetime, bucket: Bucket) -> datetime:
    when = when.astimezone(UTC)
    if bucket is Bucket.hour:
        return when.replace(minute=0, second=0, microsecond=0)
    day = when.replace(hour=0, minute=0, second=0, microsecond=0)
    return day - timedelta(days=day.weekday()) if bucket is Bucket.week else day


def create_app(store: Store, config: Config, *, token: str | None = None) -> FastAPI:
    """Build the app around an open store. `token` set → every route but /healthz needs it."""
    app = FastAPI(
        title="customer-voice listener", version=__version__, docs_url="/api/docs", openapi_url="/api/openapi.json"
    )

    def require_token(request: Request) -> None:
        if token is None:
            return
        header = request.headers.get("authorization", "")
        given = header[7:] if header.lower().startswith("bearer ") else request.cookies.get("listener_token", "")
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    auth = [Depends(require_token)]

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "version": __version__, "schema": store.schema_revision()}

    @app.get("/api/mentions", dependencies=auth, summary="Search mentions")
    def list_mentions(
        q: Annotated[str | None, Query(max_length=500, description='Words, "phrases", OR, -exclusions')] = None,
        source: Annotated[list[str] | None, Query()] = None,
        kind: Annotated[list[str] | None, Query()] = None,
        watch: Annotated[list[str] | None, Query()] = None,
        competitor: Annotated[bool | None, Query(description="Only mentions of competitor watch queries")] = None,
        topic: Annotated[str | None, Query(max_length=100)] = None,
        intent: Annotated[str | None, Query(max_length=50)] = None,
        stage: Annotated[str | None, Query(max_length=50)] = None,
        lang: Annotated[str | None, Query(max_length=10)] = None,
        sentiment: Sentiment | None = None,
        canonical_only: bool = False,
        semantic: Annotated[str | None, Query(max_length=1000, description="Rank by similarity to this text")] = None,
        min_score: Annotated[float | None, Query(description="Minimum engagement (votes/points)")] = None,
        since: datetime | None = None,
        until: datetime | None = None,
        sort: Sort = Sort.newest,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
        after: Annotated[str | None, Query(max_length=2000)] = None,
        format: Format = Format.json,
    ) -> Response:
        for k in kind or []:
            if k not in SOURCE_KINDS:
                raise HTTPException(422, f"unknown kind {k!r}; expected one of {', '.join(SOURCE_KINDS)}")
        if since and until and since >= until:
            raise HTTPException(422, "since must be before until")
        watches = list(watch or [])
        if competitor is not None:
            chosen = [w.name for w in config.watches if w.competitor == competitor]
            watches = [w for w in watches if w in chosen] if watches else chosen
            if not watches:
                return JSONResponse({"items": [], "next_after": None})
        query = MentionQuery(
            text=q or None,
            sources=tuple(source or ()),
            kinds=tuple(kind or ()),
            watches=tuple(watches),
            since=since,
            until=until,
            sort=sort.value,
            limit=limit,
            after=after,
            topic=topic,
            intent=intent,
            stage=stage,
            lang=lang,
            sentiment=sentiment.value if sentiment else None,
            canonical_only=canonical_only,
            semantic=semantic,
        )
        try:
            page = run_query(store, query)
        except ValueError as exc:  # bad query syntax or page token
            raise HTTPException(422, str(exc)) from None
        items = [i for i in page.items if min_score is None or (i.mention.score or 0) >= min_score]
        rows = rows_with_sentiment(store, items)
        if format is not Format.json:
            buf = io.StringIO()
            write_rows(rows, format.value, buf, header=True)
            media = "application/x-ndjson" if format is Format.ndjson else "text/csv; charset=utf-8"
            return Response(buf.getvalue(), media_type=media, headers=_next_header(page))
        enrich = store.enrichments_for([r["id"] for r in rows]) if rows else {}
        for r in rows:
            r["enrichments"] = enrich.get(r["id"], {})
        return JSONResponse({"items": json.loads(json.dumps(rows, default=str)), "next_after": page.next_after})

    @app.get("/api/mentions/{mention_id}", dependencies=auth, summary="One mention with enrichments and thread")
    def get_mention(mention_id: str) -> dict[str, Any]:
        m = store.get_mention(mention_id)
        if m is None:
            raise HTTPException(404, f"no mention {mention_id!r}")
        data = m.to_dict()
        data["enrichments"] = store.enrichments_for([mention_id]).get(mention_id, {})
        thread: list[dict[str, Any]] = []
        if m.thread_id:
            for other in store.search(None, sources=[m.source], limit=200).items:
                if other.mention.thread_id == m.thread_id and other.id != mention_id:
                    thread.append(
                        {
                            "id": other.id,
                            "author": other.mention.author,
                            "text": other.mention.text[:500],
                            "created_at": other.mention.created_at.isoformat(),
                            "url": other.mention.url,
                        }
                    )
        data["thread"] = thread
        return json.loads(json.dumps(data, default=str))

    @app.get("/api/stats", dependencies=auth, summary="Counts over time, bucketed and grouped")
    def stats(
        since: datetime | None = None,
        until: datetime | None = None,
        bucket: Bucket = Bucket.day,
        group_by: GroupBy = GroupBy.none,
        source: Annotated[list[str] | None, Query()] = None,
        watch: Annotated[list[str] | None, Query()] = None,
    ) -> dict[str, Any]:
        end = until or datetime.now(UTC)
        start = since or end - timedelta(days=30)
        if start >= end:
            raise HTTPException(422, "since must be before until")
        if (end - start) > timedelta(days=800) and bucket is Bucket.hour:
            raise HTTPException(422, "hourly buckets over more than 800 days are too many; use day or week")
        mentions = [
            m for m in store.mentions_between(start, end, watches=watch or ()) if not source or m.source in source
        ]
        labels: dict[str, str | None] = {}
        if group_by is GroupBy.sentiment and mentions:
            found = store.enrichments_for([m.id for m in mentions], stage="sentiment")
            labels = {k: (v.get("sentiment") or {}).get("label") for k, v in found.items()}
        counts: Counter[tuple[str, str]] = Counter()
        for m in mentions:
            key = _bucket_start(m.created_at, bucket).isoformat()
            if group_by is GroupBy.watch:
                for w in m.matched or ("(none)",):
                    counts[(key, w)] += 1
                continue
            group = {
                GroupBy.none: "all",
                GroupBy.source: m.source,
                GroupBy.kind: m.kind,
                GroupBy.sentiment: labels.get(m.id) or "unknown",
            }[group_by]
            counts[(key, group)] += 1
        series: dict[str, dict[str, int]] = {}
        for (key, group), n in sorted(counts.items()):
            series.setdefault(group, {})[key] = n
        return {
            "since": start.isoformat(),
            "until": end.isoformat(),
            "bucket": bucket.value,
            "group_by": group_by.value,
            "total": len(mentions),
            "series": series,
        }

    @app.get("/api/sources", dependencies=auth, summary="Sources and their health")
    def sources() -> list[dict[str, Any]]:
        states = {s.source: s for s in store.source_states()}
        out = []
        for s in config.sources:
            st = states.get(s.name)
            out.append(
                {
                    "name": s.name,
                    "kind": s.kind,
                    "enabled": s.enabled,
                    "every": s.every.total_seconds(),
                    "cron": s.cron,
                    "last_success_at": st.last_success_at.isoformat() if st and st.last_success_at else None,
                    "consecutive_failures": st.consecutive_failures if st else 0,
                    "last_error": st.last_error if st else None,
                    "notes": list(st.notes) if st else [],
                    "total_mentions": st.total_mentions if st else 0,
                }
            )
        for name, st in states.items():
            if all(s.name != name for s in config.sources):
                out.append(
                    {
                        "name": name,
                        "kind": None,
                        "enabled": False,
                        "consecutive_failures": st.consecutive_failures,
                        "last_error": st.last_error,
                        "total_mentions": st.total_mentions,
                        "notes": list(st.notes),
                        "last_success_at": st.last_success_at.isoformat() if st.last_success_at else None,
                    }
                )
        return out

    @app.get("/api/watches", dependencies=auth, summary="Configured watch queries")
    def watches() -> list[dict[str, Any]]:
        return [{"name": w.name, "terms": list(w.terms), "competitor": w.competitor} for w in config.watches]

    from listener.web import mount_ui

    mount_ui(app, store, config, auth)
    return app


def _next_header(page: SearchPage) -> dict[str, str]:
    return {"X-Next-After": page.next_after} if page.next_after else {}
