"""REST API for product teams: search mentions, read one with its enrichments, stats over time, source health.

Read-only. Bound to 127.0.0.1 by default; bound anywhere else it requires `Authorization: Bearer <token>`
(token from an environment variable) for every route except /healthz. Parameters are validated (422 with a
clear message), page size is capped, pagination is keyset (`after` token from the previous page).
The parameter types and response schemas are in listener/api_models.py.
"""

from __future__ import annotations

import hmac
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import Response
from fastapi_offline import FastAPIOffline

from listener import __version__
from listener.api_models import (
    Bucket,
    Format,
    GroupBy,
    Kind,
    MentionDetail,
    MentionPage,
    Name,
    Problem,
    Sentiment,
    Sort,
    SourceOut,
    Stats,
    WatchOut,
    When,
)
from listener.config import Config
from listener.export import csv_fields, rows_with_sentiment, write_rows
from listener.query import MentionQuery, run_query, thread_of, volume
from listener.types import as_utc
from storage import SourceState, Store

MAX_PAGE = 500
CURSOR_PATTERN = r"^[A-Za-z0-9_-]+$"


def invalid(param: str, msg: str, value: Any = None) -> HTTPException:
    """A 422 shaped like FastAPI's own validation errors, so clients parse one format."""
    return HTTPException(422, [{"type": "value_error", "loc": ["query", param], "msg": msg, "input": value}])


def _utc(value: datetime | None, param: str) -> datetime | None:
    """Naive → UTC, aware → converted; a date that falls off the calendar in UTC is a 422, not a crash."""
    if value is None:
        return None
    try:
        return as_utc(value)
    except OverflowError:
        raise invalid(param, "date is out of range", value.isoformat()) from None


TOKEN_COOKIE = "listener_token"
"""Set by the web UI's login form (HttpOnly, SameSite=Strict): the browser's way to present the token."""


def presented_token(request: Request) -> str:
    """The token a request carries: `Authorization: Bearer …`, else the login cookie ("" when neither)."""
    header = request.headers.get("authorization", "")
    return header[7:] if header.lower().startswith("bearer ") else request.cookies.get(TOKEN_COOKIE, "")


def token_ok(given: str, token: str | None) -> bool:
    """No token configured (loopback) → always; else a constant-time comparison."""
    return token is None or hmac.compare_digest(given.encode(), token.encode())


def create_app(store: Store, config: Config, *, token: str | None = None) -> FastAPI:
    """Build the app around an open store. `token` set → every route but /healthz, /login and the docs needs it.

    The API docs (Swagger UI at /api/docs) load their JavaScript and CSS from this server (the
    `fastapi-offline` package ships them), not from a CDN: they work offline and leak nothing. ReDoc is off:
    its bundle still loads a logo from the Redocly CDN.
    """
    app = FastAPIOffline(
        title="customer-voice listener",
        version=__version__,
        docs_url="/api/docs",
        redoc_url=None,  # ReDoc's bundle fetches its logo from the Redocly CDN; Swagger UI needs nothing outside
        openapi_url="/api/openapi.json",
        static_url="/api/docs-assets",
        swagger_ui_parameters={"validatorUrl": None},  # no spec upload to an online validator
    )

    def require_token(request: Request) -> None:
        if not token_ok(presented_token(request), token):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    auth = [Depends(require_token)]
    unauthorized: dict[int | str, dict[str, Any]] = {
        401: {"model": Problem, "description": "Token required (when the server was started with one)"}
    }

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "version": __version__, "schema": store.schema_revision()}

    @app.get(
        "/api/mentions",
        dependencies=auth,
        summary="Search mentions",
        response_model=None,
        responses={
            **unauthorized,
            200: {
                "model": MentionPage,
                "description": "One page. csv/ndjson carry the next page token in the X-Next-After header.",
                "content": {media: {"schema": {"type": "string"}} for media in ("application/x-ndjson", "text/csv")},
                "headers": {
                    "X-Next-After": {"schema": {"type": "string"}, "description": "next page token"},
                    "X-Ranked-Newest": {
                        "schema": {"type": "integer"},
                        "description": "sort=relevance ranked only this many newest matches",
                    },
                },
            },
        },
    )
    def list_mentions(
        q: Annotated[str | None, Query(max_length=500, description='Words, "phrases", OR, -exclusions')] = None,
        source: Annotated[list[Name] | None, Query()] = None,
        kind: Annotated[list[Kind] | None, Query()] = None,
        watch: Annotated[list[Name] | None, Query()] = None,
        competitor: Annotated[bool | None, Query(description="Only mentions of competitor watch queries")] = None,
        topic: Annotated[str | None, Query(max_length=100)] = None,
        intent: Annotated[str | None, Query(max_length=50)] = None,
        stage: Annotated[str | None, Query(max_length=50)] = None,
        lang: Annotated[str | None, Query(max_length=10)] = None,
        sentiment: Sentiment | None = None,
        canonical_only: bool = False,
        semantic: Annotated[str | None, Query(max_length=1000, description="Rank by similarity to this text")] = None,
        min_score: Annotated[float | None, Query(description="Minimum engagement (votes/points)")] = None,
        since: When | None = None,
        until: When | None = None,
        sort: Sort = Sort.newest,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
        after: Annotated[
            str | None, Query(max_length=2000, pattern=CURSOR_PATTERN, description="next_after of the previous page")
        ] = None,
        format: Format = Format.json,
    ) -> Response:
        since, until = _utc(since, "since"), _utc(until, "until")
        if since and until and since >= until:
            raise invalid("until", "since must be before until", until.isoformat())
        watches = list(watch or [])
        if competitor is not None:
            chosen = [w.name for w in config.watches if w.competitor == competitor]
            watches = [w for w in watches if w in chosen] if watches else chosen
            if not watches:
                return _page_response([], None, format)
        query = MentionQuery(
            text=q or None,
            sources=tuple(source or ()),
            kinds=tuple(k.value for k in kind or ()),
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
            min_score=min_score,
        )
        try:
            page = run_query(store, query)
        except ValueError as exc:  # bad query syntax or page token
            bad_cursor = "cursor" in str(exc)
            raise invalid("after" if bad_cursor else "q", str(exc), after if bad_cursor else q) from None
        rows = rows_with_sentiment(store, page.items)
        if format is Format.json:
            enrich = store.enrichments_for([r["id"] for r in rows]) if rows else {}
            for r in rows:
                r["enrichments"] = enrich.get(r["id"], {})
        return _page_response(rows, page.next_after, format, page.ranked_newest, semantic=semantic is not None)

    @app.get(
        "/api/mentions/{mention_id}",
        dependencies=auth,
        summary="One mention with enrichments and thread",
        response_model=MentionDetail,
        responses={**unauthorized, 404: {"model": Problem, "description": "No mention with this id"}},
    )
    def get_mention(mention_id: Annotated[str, Path(max_length=64)]) -> dict[str, Any]:
        m = store.get_mention(mention_id)
        if m is None:
            raise HTTPException(404, f"no mention {mention_id!r}")
        data = m.to_dict()
        data["enrichments"] = store.enrichments_for([mention_id]).get(mention_id, {})
        data["thread"] = [
            {
                "id": other.id,
                "author": other.mention.author,
                "text": other.mention.text[:500],
                "created_at": other.mention.created_at,
                "url": other.mention.url,
            }
            for other in thread_of(store, m)
        ]
        return data

    @app.get(
        "/api/stats",
        dependencies=auth,
        summary="Counts over time, bucketed and grouped",
        response_model=Stats,
        responses=unauthorized,
    )
    def stats(
        since: When | None = None,
        until: When | None = None,
        bucket: Bucket = Bucket.day,
        group_by: GroupBy = GroupBy.none,
        source: Annotated[list[Name] | None, Query()] = None,
        watch: Annotated[list[Name] | None, Query()] = None,
    ) -> dict[str, Any]:
        end = _utc(until, "until") or datetime.now(UTC)
        try:
            start = _utc(since, "since") or end - timedelta(days=30)
        except OverflowError:
            raise invalid("until", "date is out of range", end.isoformat()) from None
        if start >= end:
            raise invalid("until", "since must be before until", end.isoformat())
        try:
            total, series = volume(store, start, end, bucket.value, group_by.value, source or (), watch or ())
        except ValueError as exc:  # too many buckets
            raise invalid("bucket", str(exc), bucket.value) from None
        return {
            "since": start,
            "until": end,
            "bucket": bucket.value,
            "group_by": group_by.value,
            "total": total,
            "series": series,
        }

    @app.get("/api/sources", dependencies=auth, summary="Sources and their health", response_model=list[SourceOut],
             responses=unauthorized)  # fmt: skip
    def sources() -> list[dict[str, Any]]:
        states = {s.source: s for s in store.source_states()}
        out = []
        for s in config.sources:
            st = states.get(s.name)
            out.append(_source_row(s.name, s.kind, s.enabled, s.every.total_seconds(), s.cron, st))
        out += [_source_row(name, None, False, None, None, st) for name, st in states.items()
                if all(s.name != name for s in config.sources)]  # fmt: skip
        return out

    @app.get("/api/watches", dependencies=auth, summary="Configured watch queries", response_model=list[WatchOut],
             responses=unauthorized)  # fmt: skip
    def watches() -> list[dict[str, Any]]:
        return [{"name": w.name, "terms": list(w.terms), "competitor": w.competitor} for w in config.watches]

    from listener.web import mount_ui

    mount_ui(app, store, config, token)
    return app


def _source_row(
    name: str, kind: str | None, enabled: bool, every: float | None, cron: str | None, st: SourceState | None
) -> dict[str, Any]:
    return {
        "name": name,
        "kind": kind,
        "enabled": enabled,
        "every": every,
        "cron": cron,
        "last_success_at": st.last_success_at if st else None,
        "consecutive_failures": st.consecutive_failures if st else 0,
        "last_error": st.last_error if st else None,
        "notes": list(st.notes) if st else [],
        "total_mentions": st.total_mentions if st else 0,
    }


def _page_response(
    rows: list[dict[str, Any]],
    next_after: str | None,
    format: Format,
    ranked_newest: int | None = None,
    *,
    semantic: bool = False,
) -> Response:
    headers = {"X-Next-After": next_after} if next_after else {}
    if ranked_newest:
        headers["X-Ranked-Newest"] = str(ranked_newest)
    if format is Format.json:
        page = {"items": rows, "next_after": next_after, "ranked_newest": ranked_newest}
        body = json.dumps(page, ensure_ascii=False, default=str)
        return Response(body, media_type="application/json", headers=headers)
    buf = io.StringIO()
    write_rows(rows, format.value, buf, header=True, fields=csv_fields(semantic))
    media = "application/x-ndjson" if format is Format.ndjson else "text/csv; charset=utf-8"
    return Response(buf.getvalue(), media_type=media, headers=headers)
