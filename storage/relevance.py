"""Relevance order on SQLite at scale: which rows FTS5 ranks, and in which order of operations.

FTS5 scores every match with bm25 (no top-k pruning), and the planner's join plan looks every match up
in `mention` and runs the filters on it before ranking. Two cuts, both exact (same pages as ranking
every match): a time window becomes a rowid range FTS5 reads instead of whole doclists (mentions are
stored about in time order), and with filters that cost the join a lot per match (labels, watches) or
that most matches pass, FTS5 ranks first and the filters run only on a window of top matches.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from storage.models import mention

FTS = sa.table("mention_fts", sa.column("rowid", sa.Integer))
"""The FTS5 table (external content, rowid = mention.seq)."""

RANKED_FIRST_ABOVE = 2000
"""SQLite relevance with filters: from this many matches, rank inside FTS5 first (`ranked_in_fts`)."""
RANKED_SAMPLE = 1000
"""Matches tried against the filters to size the FTS-first window."""
RANKED_WINDOW_SHARE = 10
"""FTS-first only while its window is at most this share of the matches (1/10): each windowed row costs
a sort insert and a row look-up on top of its bm25, the join plan a look-up per match but bm25 only for
those passing the filters."""
RANKED_COLUMN_SHARE = 0.15
"""With column filters only, FTS-first when at least this share of the sampled matches passes them…"""
RANKED_DENSE_SHARE = 1 / 3
"""…and the query matches at most this share of all mentions."""
RANKED_NEWEST = 25_000
"""SQLite relevance ranks at most the newest this many matches (`newest_horizon`): bm25 costs ~0.8 µs a
match and FTS5 cannot skip low scorers, so a word in 60% of 1M mentions took 430 ms to rank in full."""
SEQ_SPAN_ROWS = 200_000
"""Time windows with more live mentions than this are not narrowed to a rowid range (`in_seq_span`)."""


def in_seq_span(conn: Connection, clauses: list[ColumnElement[bool]]) -> ColumnElement[bool] | None:
    """`rowid BETWEEN` the lowest and highest seq of the live mentions in the time window (and sources).

    Mentions are stored about in time order, so 7 days of a year are ~2% of the rowids: FTS5 then ranks
    (or the join looks up) only the matches in that range instead of all of them (`sync` + 7 days at 1M:
    104 → 5 ms). `clauses`: the time window, sources and liveness (index-friendly). Exact: every mention
    passing them is in the range. None when the window holds more than SEQ_SPAN_ROWS mentions (reading
    it would cost more than it saves).
    """
    window = sa.select(mention.c.seq).where(*clauses).limit(SEQ_SPAN_ROWS + 1).subquery()
    lo, hi, n = conn.execute(
        sa.select(sa.func.min(window.c.seq), sa.func.max(window.c.seq), sa.func.count()).select_from(window)
    ).one()
    if n > SEQ_SPAN_ROWS:
        return None
    return FTS.c.rowid.between(lo, hi) if n else sa.false()


def newest_horizon(conn: Connection, matching: list[ColumnElement[bool]], newest: int | None = None) -> int | None:
    """The rowid of the `newest`-th newest match, or None when there are no more matches than that.

    `rowid >= horizon` then keeps relevance to the newest matches. FTS5 walks its doclist backwards
    without scoring, so finding the horizon costs ~1 ms at 25k. Mentions are stored about in time order,
    so these are about the newest by date too; the page token pins the horizon so later pages agree.
    """
    newest = RANKED_NEWEST if newest is None else newest
    stmt = sa.select(FTS.c.rowid).where(*matching).order_by(FTS.c.rowid.desc()).limit(2).offset(newest - 1)
    rows = conn.execute(stmt).scalars().all()
    return int(rows[0]) if len(rows) == 2 else None


def ranked_in_fts(
    conn: Connection,
    matching: list[ColumnElement[bool]],
    rank: ColumnElement[Any],
    rest: list[ColumnElement[bool]],
    *,
    narrows: bool,
    subqueries: bool,
    indexed: bool,
    limit: int,
    after: tuple[float, int] | None,
) -> Sequence[Any] | None:
    """(seq, _key) of the page + 1 in relevance order, ranked inside FTS5; None: run the join plan.

    The join plan looks every match up in `mention` and runs the filters (label/watch EXISTS too) on it,
    then ranks those passing. Two plans rank inside FTS5 instead, both exact:
    - FTS-first: bm25 and the top W matches, then the filters on those W only (one bm25 pass, ~0.7 µs a
      match, plus W look-ups). The first `limit + 1` candidates passing the filters are the first of all
      matches. W comes from the share of a sample of the matches passing the filters (`_plan`), and
      grows once if the top matches pass less often than the sample.
    - filtered set: `rowid IN` the seqs passing the filters, read from an index (sources, kinds, authors,
      time), so a match costs a set probe, and bm25 runs only on those in the set.
    `matching`: the MATCH (and a rowid span); `rest`: the filters; `indexed`: an index can drive them.
    """
    window, hits = 2 * (limit + 1), None  # live mentions only: deleted rows are rare
    if narrows:
        chosen = _plan(conn, matching, rest, subqueries, indexed, limit)
        if chosen is None:
            return None
        if isinstance(chosen, str):
            return _in_set(conn, matching, rank, rest, limit, after)
        window, hits = chosen
    rowid = FTS.c.rowid
    stmt = _ranked(rank, matching, after)
    for attempt in range(2):
        # A subquery with LIMIT is never flattened into a join: FTS5 ranks first, then W rows meet `mention`.
        top = stmt.order_by(sa.literal_column("k"), rowid.desc()).limit(window).subquery("top")
        keys = conn.execute(
            sa.select(top.c.seq, top.c.k.label("_key"))
            .select_from(top.join(mention, mention.c.seq == top.c.seq))
            .where(*rest)
            .order_by(top.c.k, top.c.seq.desc())
            .limit(limit + 1)
        ).all()
        if len(keys) > limit:
            return keys
        if hits is None:
            hits = conn.execute(sa.select(sa.func.count()).select_from(FTS).where(*matching)).scalar_one()
        if window >= hits:
            return keys  # every match was a candidate
        # The top matches pass less often than the sample did: size the window on what passed in this one.
        window = min(hits, -(-3 * (limit + 1) * window // max(len(keys), 1)))
        if attempt or window * RANKED_WINDOW_SHARE > hits:
            break
    return None


def _ranked(
    rank: ColumnElement[Any], matching: list[ColumnElement[bool]], after: tuple[float, int] | None
) -> sa.Select[Any]:
    """(seq, k = rank) of the matches after the page bound, from FTS5 alone."""
    rowid = FTS.c.rowid
    stmt = sa.select(rowid.label("seq"), rank.label("k")).select_from(FTS).where(*matching)
    if after is not None:
        last_key, last_seq = after
        bound = sa.bindparam("after_key", last_key, type_=sa.Float)
        stmt = stmt.where(sa.or_(rank > bound, sa.and_(rank == bound, rowid < last_seq)))
    return stmt


def _in_set(
    conn: Connection,
    matching: list[ColumnElement[bool]],
    rank: ColumnElement[Any],
    rest: list[ColumnElement[bool]],
    limit: int,
    after: tuple[float, int] | None,
) -> Sequence[Any]:
    """The filtered-set plan: `rowid + 0 IN (seqs passing the filters)`; the `+ 0` keeps FTS5 scanning its
    doclist (not seeking each listed rowid) and SQLite probing the set per match (sync + lemmy: 107 → 26 ms)."""
    passing = sa.select(mention.c.seq).where(*rest)
    stmt = _ranked(rank, [*matching, (FTS.c.rowid + 0).in_(passing)], after)
    rows = stmt.order_by(sa.literal_column("k"), FTS.c.rowid.desc()).limit(limit + 1).subquery()
    return conn.execute(sa.select(rows.c.seq, rows.c.k.label("_key"))).all()


IN_SET = "in-set"


def _plan(
    conn: Connection,
    matching: list[ColumnElement[bool]],
    rest: list[ColumnElement[bool]],
    subqueries: bool,
    indexed: bool,
    limit: int,
) -> tuple[int, int] | str | None:
    """(W, matches) for FTS-first, IN_SET for the filtered set, None for the join plan.

    FTS-first when W is at most 1/RANKED_WINDOW_SHARE of the matches and, with column filters only
    (source, time, kind, author, score), when many matches pass them and the query is not in a third of
    all mentions (then bm25 on every match costs more than the set or the join). Else the filtered set
    when an index drives the column filters, else the join (it runs label, watch, canonical subqueries
    per match, which FTS-first avoids). The filters are tried on every k-th match by rowid
    (~RANKED_SAMPLE; rowids follow insertion, not relevance, source or time: a spread sample).
    """
    hits = conn.execute(sa.select(sa.func.count()).select_from(FTS).where(*matching)).scalar_one()
    if hits <= RANKED_FIRST_ABOVE:
        return None  # the join plan is cheap on few matches
    fallback = IN_SET if indexed and not subqueries else None
    if not subqueries:  # a dense doclist makes bm25 on every match the dearest part
        rows = conn.execute(sa.select(sa.func.max(mention.c.seq))).scalar_one() or 0
        if hits > rows * RANKED_DENSE_SHARE:
            return fallback
    step = max(1, hits // RANKED_SAMPLE)
    sample = sa.select(FTS.c.rowid).where(*matching, FTS.c.rowid % step == 0)
    passes = sa.case((sa.and_(*rest), 1), else_=0) if rest else sa.literal(1)
    sampled, passed = conn.execute(
        sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(passes), 0))
        .select_from(mention)
        .where(mention.c.seq.in_(sample))
    ).one()
    if not passed or (not subqueries and passed < sampled * RANKED_COLUMN_SHARE):
        return fallback
    window = -(-3 * (limit + 1) * sampled // passed)
    return (window, hits) if window * RANKED_WINDOW_SHARE <= hits else fallback
