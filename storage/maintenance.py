"""Health checks, full-text index repair and purging (data-rights requests, retention)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from listener.types import as_utc
from storage import alerts
from storage.models import enrichment, mention, mention_label, mention_watch, source_state

CHECK_CHUNK = 2000


def check(conn: Connection) -> list[str]:
    """Problems found, one readable line each; [] means healthy."""
    problems: list[str] = []
    if conn.dialect.name == "sqlite":
        problems += _sqlite_integrity(conn)
    orphans = conn.execute(
        sa.select(sa.func.count()).select_from(enrichment).where(~enrichment.c.mention_id.in_(sa.select(mention.c.id)))
    ).scalar_one()
    if orphans:
        problems.append(f"{orphans} enrichment rows belong to no mention")
    problems += _watch_consistency(conn)
    return problems


def _sqlite_integrity(conn: Connection) -> list[str]:
    problems = []
    rows = [str(r[0]) for r in conn.exec_driver_sql("PRAGMA integrity_check").fetchall()]
    if rows != ["ok"]:
        problems += [f"integrity_check: {r}" for r in rows[:20]]
    indexed = conn.exec_driver_sql("SELECT count(*) FROM mention_fts_docsize").scalar_one()
    stored = conn.execute(sa.select(sa.func.count()).select_from(mention)).scalar_one()
    if indexed != stored:
        problems.append(f"full-text index has {indexed} rows but there are {stored} mentions (rebuild the index)")
    else:
        try:
            with conn.begin_nested():
                conn.exec_driver_sql("INSERT INTO mention_fts(mention_fts, rank) VALUES ('integrity-check', 1)")
        except sa.exc.DatabaseError as e:
            problems.append(f"full-text index does not match the mentions ({e.orig}); rebuild the index")
    return problems


def _watch_consistency(conn: Connection) -> list[str]:
    """mention.matched and mention_watch must list the same watches; walked in seq chunks, constant memory."""
    mismatched = 0
    example = None
    last = 0
    while True:
        rows = conn.execute(
            sa.select(mention.c.seq, mention.c.id, mention.c.matched)
            .where(mention.c.seq > last)
            .order_by(mention.c.seq)
            .limit(CHECK_CHUNK)
        ).all()
        if not rows:
            break
        last = rows[-1].seq
        indexed: dict[str, set[str]] = {}
        ids = [r.id for r in rows]
        for part in range(0, len(ids), 500):
            watch_rows = conn.execute(
                sa.select(mention_watch.c.mention_id, mention_watch.c.watch).where(
                    mention_watch.c.mention_id.in_(ids[part : part + 500])
                )
            )
            for mid, watch in watch_rows:
                indexed.setdefault(mid, set()).add(watch)
        for r in rows:
            if set(r.matched or ()) != indexed.get(r.id, set()):
                mismatched += 1
                example = example or r.id
    problems = []
    if mismatched:
        problems.append(f"{mismatched} mentions have a watch index out of sync with matched (e.g. {example})")
    stray = conn.execute(
        sa.select(sa.func.count())
        .select_from(mention_watch)
        .where(~mention_watch.c.mention_id.in_(sa.select(mention.c.id)))
    ).scalar_one()
    if stray:
        problems.append(f"{stray} watch index rows belong to no mention")
    return problems


def rebuild_search_index(conn: Connection) -> None:
    """SQLite: rebuild FTS5 from the mention table. PostgreSQL's generated column cannot drift."""
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("INSERT INTO mention_fts(mention_fts) VALUES ('rebuild')")


def purge(conn: Connection, *, source: str | None, author: str | None, before: datetime | None) -> int:
    """Delete matching mentions with their enrichments and watch rows; returns how many mentions."""
    where: list[Any] = []
    if source is not None:
        where.append(mention.c.source == source)
    if author is not None:
        where.append(mention.c.author == author)
    if before is not None:
        where.append(mention.c.created_at < as_utc(before))
    if not where:
        raise ValueError("purge needs at least one of source, author or before")
    doomed = sa.select(mention.c.id).where(*where)
    # Explicit, not only ON DELETE CASCADE: stays correct for a database once opened with foreign keys off.
    conn.execute(sa.delete(enrichment).where(enrichment.c.mention_id.in_(doomed)))
    conn.execute(sa.delete(mention_watch).where(mention_watch.c.mention_id.in_(doomed)))
    conn.execute(sa.delete(mention_label).where(mention_label.c.seq.in_(sa.select(mention.c.seq).where(*where))))
    deleted = conn.execute(sa.delete(mention).where(*where)).rowcount
    actual = (
        sa.select(sa.func.count())
        .select_from(mention)
        .where(mention.c.source == source_state.c.source)
        .scalar_subquery()
    )
    conn.execute(sa.update(source_state).values(total_mentions=actual))
    alerts.scrub_purged(conn, source=source, author=author, before=as_utc(before) if before is not None else None)
    return int(deleted or 0)
