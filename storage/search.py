"""Search and listing queries: filters, full-text (FTS5 / tsvector), sorting and keyset pages.

Pages are keyset, not OFFSET: the token carries the last row's sort key and `seq`, so page 50
costs the same as page 1 and rows inserted meanwhile never shift or duplicate what follows.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from listener.types import Mention, as_utc
from storage import labels as label_rows
from storage import newest, relevance
from storage.fts import fts5_match, parse_search, pg_tsquery
from storage.models import UTCDateTime, mention, mention_watch
from storage.records import SearchPage, StoredMention, to_mention
from storage.relevance import FTS as _FTS

SORTS = ("newest", "relevance", "engagement")
NO_SCORE = -1e300
"""Engagement sort key for mentions without a score: after every real score, negative ones included."""
MAX_LIMIT = 1000
TIME_DRIVEN_ABOVE = newest.FEW_MATCHES
"""SQLite newest-first text search that the rowid plan (storage/newest.py) leaves: with more matches than
this, walk mentions newest-first and keep those in the match set, instead of reading and sorting every match
(a common word matches 10%+ of the store); with fewer, sort them all (the rowid plan leaves exactly those)."""

SNIPPET_RANGE_ROWS = 50_000
"""A page whose seqs span at most this many rowids gets its snippets from one FTS5 range scan."""

_FTS_NAME: ColumnElement[Any] = sa.literal_column("mention_fts")
_PG_SEARCH: ColumnElement[Any] = sa.literal_column("mention.search")


@dataclass(frozen=True)
class Filters:
    """Everything `search`/`count` narrow by besides the text query. Windows are [since, until)."""

    sources: Sequence[str] = ()
    kinds: Sequence[str] = ()
    watches: Sequence[str] = ()
    since: datetime | None = None
    until: datetime | None = None
    authors: Sequence[str] = ()
    include_deleted: bool = False
    labels: Sequence[tuple[str, str]] = ()
    """(name, value) pairs that must all hold: topic, intent, stage, lang, sentiment (storage.labels)."""
    canonical_only: bool = False
    min_score: float | None = None
    """Minimum engagement; a mention without a score counts as 0."""
    rare_labels: frozenset[tuple[str, str]] = frozenset()
    """Labels so rare that their rows should drive the query (set by `with_rare_labels`)."""

    def with_rare_labels(self, conn: Connection) -> Filters:
        return replace(self, rare_labels=label_rows.rare(conn, self.labels)) if self.labels else self

    @property
    def narrows(self) -> bool:
        """Anything beyond "live mentions" (every search also has deleted = false)."""
        return bool(
            self.sources or self.kinds or self.watches or self.since or self.until or self.authors or self.labels
            or self.canonical_only or self.min_score is not None or self.include_deleted
        )  # fmt: skip

    def clauses(self) -> list[ColumnElement[bool]]:
        where: list[ColumnElement[bool]] = []
        if self.sources:
            where.append(mention.c.source.in_(list(self.sources)))
        if self.kinds:
            where.append(mention.c.kind.in_(list(self.kinds)))
        if self.authors:
            where.append(mention.c.author.in_(list(self.authors)))
        if self.watches:
            watched = sa.select(sa.literal(1)).where(
                mention_watch.c.mention_id == mention.c.id, mention_watch.c.watch.in_(list(self.watches))
            )
            where.append(sa.exists(watched))
        if self.since is not None:
            where.append(mention.c.created_at >= as_utc(self.since))
        if self.until is not None:
            where.append(mention.c.created_at < as_utc(self.until))
        for name, value in self.labels:
            rare = (name, value) in self.rare_labels
            where.append(label_rows.in_label(name, value) if rare else label_rows.has_label(name, value))
        if self.canonical_only:
            where.append(label_rows.is_canonical())
        if self.min_score is not None:
            where.append(sa.func.coalesce(mention.c.score, 0) >= self.min_score)
        if not self.include_deleted:
            where.append(mention.c.deleted == sa.false())
        return where


def _text_search(query: str, dialect: str) -> tuple[ColumnElement[bool], ColumnElement[Any], ColumnElement[Any]]:
    """(match condition, rank where lower is better, snippet) for one dialect."""
    parsed = parse_search(query)
    if dialect == "sqlite":
        match = _FTS_NAME.op("MATCH")(sa.bindparam("fts_query", fts5_match(parsed), type_=sa.Text))
        # A hit in the title counts double, one in the author name half.
        bm25: ColumnElement[Any] = sa.func.bm25(_FTS_NAME, 2.0, 1.0, 0.5)
        snippet = sa.func.snippet(_FTS_NAME, -1, "[", "]", "…", 16)
        return match.self_group(), bm25, snippet
    tsquery = pg_tsquery(parsed)
    match = _PG_SEARCH.op("@@")(tsquery)
    # float8, not ts_rank_cd's float4: the page token must carry the exact value the next query compares.
    rank: ColumnElement[Any] = sa.cast(-sa.func.ts_rank_cd(_PG_SEARCH, tsquery), sa.Float(precision=53))
    body = sa.func.concat_ws(" — ", mention.c.title, mention.c.text)
    options = 'StartSel="[", StopSel="]", MaxWords=24, MinWords=10, MaxFragments=1, FragmentDelimiter="…"'
    snippet = sa.func.ts_headline(sa.literal_column("'simple'::regconfig"), body, tsquery, options)
    return match, rank, snippet


@dataclass
class _Plan:
    """FROM + WHERE shared by search and count, plus the rank/snippet a text query brings."""

    from_: Any
    where: list[ColumnElement[bool]]
    match: ColumnElement[bool] | None = None
    rank: ColumnElement[Any] | None = None
    snippet: ColumnElement[Any] | None = None


def _plan(query: str | None, filters: Filters, dialect: str) -> _Plan:
    plan = _Plan(from_=mention, where=filters.clauses())
    if query is not None and query.strip():
        plan.match, plan.rank, plan.snippet = _text_search(query, dialect)
        if dialect == "sqlite":
            plan.from_ = mention.join(_FTS, _FTS.c.rowid == mention.c.seq)
        plan.where.append(plan.match)
    return plan


def _encode(sort: str, key: Any, seq: int, horizon: int | None = None) -> str:
    fields = [sort, key, seq] if horizon is None else [sort, key, seq, horizon]
    data = json.dumps(fields, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _decode(token: str, sort: str) -> tuple[Any, int, int | None]:
    """(sort key, seq, relevance horizon or None) of a page token; ValueError("invalid page cursor")."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        fields = json.loads(raw)
        if not isinstance(fields, list) or len(fields) not in (3, 4):
            raise ValueError
        kind, key, seq = fields[:3]
        horizon = fields[3] if len(fields) == 4 else None
        if kind != sort or not _is_int(seq) or (horizon is not None and (sort != "relevance" or not _is_int(horizon))):
            raise ValueError
        if sort == "newest":
            key = datetime.fromisoformat(key)
        elif not isinstance(key, int | float) or isinstance(key, bool):
            raise ValueError
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise ValueError("invalid page cursor") from None
    return key, seq, horizon


def search(
    conn: Connection,
    query: str | None,
    filters: Filters,
    *,
    limit: int,
    after: str | None,
    sort: str,
) -> SearchPage:
    if sort not in SORTS:
        raise ValueError(f"unknown sort {sort!r} (use one of: {', '.join(SORTS)})")
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_LIMIT}, not {limit}")
    filters = filters.with_rare_labels(conn)
    plan = _plan(query, filters, conn.dialect.name)
    rank, where = plan.rank, plan.where
    if sort == "relevance" and rank is None:
        sort = "newest"  # nothing to be relevant to: newest first is the useful order
    cursor = _decode(after, sort) if after is not None else None
    bound: tuple[Any, int] | None = (cursor[0], cursor[1]) if cursor is not None else None
    key: ColumnElement[Any]
    in_span: ColumnElement[bool] | None = None
    horizon: int | None = None
    newest_only: ColumnElement[bool] | None = None  # rowid >= horizon: FTS5 ranks only the newest matches
    if sort == "relevance":
        assert rank is not None
        key, descending = rank, False
        if conn.dialect.name == "sqlite":
            span = replace(filters, kinds=(), watches=(), authors=(), labels=(), canonical_only=False, min_score=None)
            timed = filters.since is not None or filters.until is not None
            in_span = relevance.in_seq_span(conn, span.clauses()) if timed else None
            if in_span is not None:
                where.append(in_span)  # FTS5 reads only that rowid range of each doclist
            if cursor is not None:
                horizon = cursor[2]  # later pages rank what the first page ranked
            else:
                assert plan.match is not None
                horizon = relevance.newest_horizon(conn, [plan.match] if in_span is None else [plan.match, in_span])
            if horizon is not None:
                newest_only = _FTS.c.rowid >= horizon
                where.append(newest_only)
    elif sort == "engagement":
        key, descending = sa.func.coalesce(mention.c.score, NO_SCORE), True
    else:
        key, descending = mention.c.created_at, True
    if bound is not None:
        last_key, last_seq = bound
        bound_key = sa.bindparam("after_key", last_key, type_=UTCDateTime if sort == "newest" else sa.Float)
        beyond = key < bound_key if descending else key > bound_key
        where.append(sa.or_(beyond, sa.and_(key == bound_key, mention.c.seq < last_seq)))
    # Two steps: rank/sort only (seq, key) over all matches, then fetch full rows and snippets for
    # the page. Sorting wide rows, or computing snippets for every match, costs 10-50x on big hits.
    page = (
        sa.select(mention.c.seq, key.label("_key"))
        .select_from(plan.from_)
        .where(*where)
        .order_by(key.desc() if descending else key.asc(), mention.c.seq.desc())
        .limit(limit + 1)
    )
    keys: Sequence[Any] | None = None
    if plan.match is not None and sort == "newest" and conn.dialect.name == "sqlite":
        rest = [w for w in where if w is not plan.match]
        keys = newest.newest_by_rowid(conn, plan.match, rest, limit, bound)
        hits = _hits(conn, plan.match) if keys is None else 0
        if hits > TIME_DRIVEN_ABOVE:
            rows = conn.execute(sa.select(sa.func.max(mention.c.seq))).scalar_one() or 0
            page = _time_driven(plan, where, key, limit, probe=hits * 4 > rows)
    elif sort == "relevance" and conn.dialect.name == "sqlite":
        assert plan.match is not None and rank is not None
        subqueries = bool(filters.watches or filters.labels or filters.canonical_only)
        indexed = bool(filters.sources or filters.kinds or filters.authors or in_span is not None)
        matching = [w for w in (plan.match, in_span, newest_only) if w is not None]
        rest = filters.clauses()
        if horizon is not None:  # on the mention side too, so a filtered set holds only the newest part of a source
            rest.append(mention.c.seq >= horizon)
        keys = relevance.ranked_in_fts(
            conn, matching, rank, rest,
            narrows=filters.narrows, subqueries=subqueries, indexed=indexed, limit=limit,
            after=bound,
        )  # fmt: skip
    if keys is None:
        keys = conn.execute(page).all()
    seqs = [row.seq for row in keys[:limit]]
    columns: list[Any] = [*mention.c]
    if plan.snippet is not None:
        columns.append(plan.snippet.label("_snippet"))
    fetch = sa.select(*columns).select_from(plan.from_).where(mention.c.seq.in_(seqs))
    if plan.match is not None:
        fetch = fetch.where(plan.match)  # FTS5 snippet() only works in a MATCH query
        if conn.dialect.name == "sqlite" and seqs:  # …and the rowids keep FTS5 from scanning every match:
            # a narrow rowid range is read in one pass (~1 ms for a page); each listed rowid is a new doclist
            # seek (0.1-0.3 ms each), so the list only when the page is spread wide (relevance).
            lo, hi = min(seqs), max(seqs)
            narrow = hi - lo <= SNIPPET_RANGE_ROWS
            fetch = fetch.where(_FTS.c.rowid.between(lo, hi) if narrow else _FTS.c.rowid.in_(seqs))
    rows = {row["seq"]: row for row in conn.execute(fetch).mappings()} if seqs else {}
    items = [
        StoredMention(mention=to_mention(row), id=row["id"], seq=seq, snippet=row.get("_snippet"))
        for seq in seqs
        if (row := rows.get(seq)) is not None
    ]
    next_after = None
    if len(keys) > limit:
        last = keys[limit - 1]
        last_key = last._key.isoformat() if sort == "newest" else float(last._key)
        next_after = _encode(sort, last_key, last.seq, horizon)
    return SearchPage(items=items, next_after=next_after, ranked_newest=relevance.RANKED_NEWEST if horizon else None)


def _hits(conn: Connection, match: ColumnElement[bool]) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(_FTS).where(match)).scalar_one())


def thread(conn: Connection, source: str, thread_id: str, limit: int) -> list[StoredMention]:
    """Live mentions of one source's thread, oldest first (index on source, thread_id)."""
    stmt = (
        sa.select(mention)
        .where(mention.c.source == source, mention.c.thread_id == thread_id, mention.c.deleted == sa.false())
        .order_by(mention.c.created_at, mention.c.seq)
        .limit(limit)
    )
    rows = conn.execute(stmt).mappings()
    return [StoredMention(mention=to_mention(row), id=row["id"], seq=row["seq"]) for row in rows]


def _time_driven(
    plan: _Plan, where: list[ColumnElement[bool]], key: ColumnElement[Any], limit: int, *, probe: bool
) -> sa.Select[Any]:
    """Newest-first over the created_at index, keeping matches; stops after limit+1 rows.

    Up to a quarter of the store matching, the match set is read once as a rowid list (`seq + 0 IN`:
    no rowid look-up per listed match, so the planner walks the created_at index); above that, building
    the list costs more than asking FTS5 about each row walked (most of them match).
    """
    assert plan.match is not None
    rest = [w for w in where if w is not plan.match]
    if probe:
        fts = _FTS.alias("f")
        match: ColumnElement[bool] = sa.exists(
            sa.select(sa.literal(1)).select_from(fts).where(fts.c.rowid == mention.c.seq, plan.match)
        )
    else:
        match = (mention.c.seq + 0).in_(sa.select(_FTS.c.rowid).where(plan.match))
    return (
        sa.select(mention.c.seq, key.label("_key"))
        .select_from(mention)
        .where(*rest, match)
        .order_by(key.desc(), mention.c.seq.desc())
        .limit(limit + 1)
    )


def count(conn: Connection, query: str | None, filters: Filters) -> int:
    plan = _plan(query, filters.with_rare_labels(conn), conn.dialect.name)
    return int(conn.execute(sa.select(sa.func.count()).select_from(plan.from_).where(*plan.where)).scalar_one())


def mentions_between(
    conn: Connection, since: datetime, until: datetime, watches: Sequence[str], limit: int | None
) -> list[Mention]:
    filters = Filters(watches=watches, since=since, until=until)
    stmt = sa.select(mention).where(*filters.clauses()).order_by(mention.c.created_at, mention.c.seq)
    if limit is not None:
        stmt = stmt.limit(limit)
    return [to_mention(row) for row in conn.execute(stmt).mappings()]
