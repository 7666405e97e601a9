"""Newest-first text search on SQLite from FTS5's own rowid order, exact by a check on the time index.

FTS5 hands out matches newest-rowid-first and stops early (`ORDER BY rowid DESC LIMIT k`: 0.1-2 ms even
for a phrase or a word in 60% of 1M mentions), while listing every match first costs 7-20 ms and
walking the time index probing FTS5 costs 30-40. Rowid (= seq) is insertion order, and a page is in
`created_at` order: sources fetched at different intervals, and backfill, store some mentions out of
time order. So the candidates are the k newest matches by rowid, and one look at the time index proves
the page: every mention newer than the page's last row must have a seq inside the candidates' range.
When one does not, the candidates are widened down to its seq once, which is then exact by the same
argument; only very out-of-order data or very selective filters fall back to the caller's plan.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from storage.models import mention
from storage.relevance import FTS

FIRST_CANDIDATES = 256
"""Matches taken by rowid on the first try (at least 4 × the page): enough for a page of 50 with most
filters; each retry takes 4 × as many."""
MAX_CANDIDATES = 16_384
"""Beyond this many candidates (very selective filters, deep pages) the caller's time-index plan is cheaper."""
FEW_MATCHES = 2000
"""Queries with at most this many matches are left to the caller, which sorts them all (a rare word: 8 ms
that way, 19-27 ms proving a page whose last row lies deep in time); storage.search uses it as its bound."""
MAX_SPAN = 200_000
"""Widening below an out-of-order mention stops being cheap past this many rowids."""


def newest_by_rowid(
    conn: Connection,
    match: ColumnElement[bool],
    rest: list[ColumnElement[bool]],
    limit: int,
    after: tuple[datetime, int] | None,
) -> Sequence[Any] | None:
    """(seq, _key = created_at) of the page + 1 newest matches passing `rest`, or None: use another plan.

    `rest` holds the filters and the page-token bound; `after` is that bound, (created_at, seq) of the
    previous page's last row. Later pages take their candidates below its seq (where most of what
    follows it in time was stored) and prove it the same way, so exports page deep at the same cost.
    """
    few = sa.select(FTS.c.rowid).where(match).limit(FEW_MATCHES + 1).subquery()
    if conn.execute(sa.select(sa.func.count()).select_from(few)).scalar_one() <= FEW_MATCHES:
        return None
    below = [] if after is None else [FTS.c.rowid <= after[1]]
    k = max(FIRST_CANDIDATES, 4 * (limit + 1))
    while k <= MAX_CANDIDATES:
        candidates = sa.select(FTS.c.rowid).where(match, *below).order_by(FTS.c.rowid.desc()).limit(k).subquery()
        lowest, highest, taken = conn.execute(
            sa.select(sa.func.min(candidates.c.rowid), sa.func.max(candidates.c.rowid), sa.func.count())
        ).one()
        keys = _page(conn, [mention.c.seq.in_(sa.select(candidates.c.rowid))], rest, limit) if taken else []
        if taken < k and after is None:
            return keys  # every match was a candidate
        if len(keys) > limit:
            return _proven(conn, match, rest, limit, after, keys, (int(lowest), int(highest)))
        if taken < k:
            return None  # the last page of a later-page walk: matches stored above its cursor may remain
        k *= 4
    return None


def _proven(
    conn: Connection,
    match: ColumnElement[bool],
    rest: list[ColumnElement[bool]],
    limit: int,
    after: tuple[datetime, int] | None,
    keys: Sequence[Any],
    seqs: tuple[int, int],
) -> Sequence[Any] | None:
    """`keys` if every mention that could sort between the previous page's last row and this page's last
    row has a seq inside the candidates' range, else the page recomputed over every match in the range
    widened to take them in (exact: widening only moves this page's last row newer, which shrinks the
    time slice to cover, and everything in it is then inside)."""
    last = keys[limit]._key
    lowest, highest = seqs
    seq = mention.c.seq + 0  # `+ 0`: else SQLite reads min/max(seq) walking the table, not the time index
    slice_ = [mention.c.created_at >= last, *([] if after is None else [mention.c.created_at <= after[0]])]
    low, high = conn.execute(
        sa.select(sa.func.min(sa.case((mention.c.created_at > last, seq))), sa.func.max(seq)).where(*slice_)
    ).one()
    capped = after is not None  # the first page took the newest matches: nothing above them to miss
    too_low = low is not None and low < lowest
    too_high = capped and high is not None and high > highest
    if not (too_low or too_high):
        return keys
    lo = min(lowest, low) if too_low else lowest
    hi = max(highest, high) if too_high else highest
    if hi - lo > MAX_SPAN:
        return None
    span = [FTS.c.rowid >= lo, *([FTS.c.rowid <= hi] if capped else [])]
    return _page(conn, [mention.c.seq.in_(sa.select(FTS.c.rowid).where(match, *span))], rest, limit)


def _page(
    conn: Connection, within: list[ColumnElement[bool]], rest: list[ColumnElement[bool]], limit: int
) -> Sequence[Any]:
    stmt = (
        sa.select(mention.c.seq, mention.c.created_at.label("_key"))
        .where(*within, *rest)
        .order_by(mention.c.created_at.desc(), mention.c.seq.desc())
        .limit(limit + 1)
    )
    return conn.execute(stmt).all()
