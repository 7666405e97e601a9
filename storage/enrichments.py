"""Enrichment rows: which mentions still need a (stage, model_version), and saving/reading results.

Results are keyed by model version, so a new model re-enriches everything while the old rows
stay as history; readers get the newest version unless they ask for a specific one.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from enrich.base import Enrichment
from listener.types import Mention
from storage import labels
from storage.ingest import chunks
from storage.models import enrichment, mention
from storage.records import to_mention


def _missing(stage: str, model_version: str) -> sa.ColumnElement[bool]:
    done = (
        sa.select(sa.literal(1))
        .where(enrichment.c.mention_id == mention.c.id)
        .where(enrichment.c.stage == stage, enrichment.c.model_version == model_version)
    )
    return sa.and_(~sa.exists(done), mention.c.deleted == sa.false())


def unenriched_batch(
    conn: Connection, stage: str, model_version: str, after_seq: int, batch_size: int
) -> tuple[list[Mention], int]:
    """The next `batch_size` mentions after `after_seq` lacking this enrichment, and the new position."""
    stmt = (
        sa.select(mention)
        .where(mention.c.seq > after_seq, _missing(stage, model_version))
        .order_by(mention.c.seq)
        .limit(batch_size)
    )
    rows = conn.execute(stmt).mappings().all()
    return [to_mention(row) for row in rows], (rows[-1]["seq"] if rows else after_seq)


def count_unenriched_any(conn: Connection, stages: Sequence[tuple[str, str]]) -> int:
    """Live mentions lacking at least one of these (stage, model_version): the mentions a run will process once."""
    if not stages:
        return 0
    missing = [_missing(stage, version) for stage, version in stages]
    stmt = sa.select(sa.func.count()).select_from(mention).where(sa.or_(*missing))
    return int(conn.execute(stmt).scalar_one())


def save(conn: Connection, items: Sequence[Enrichment], now: datetime) -> int:
    """Upsert, and refresh the mentions' labels from these (now newest) results.

    Results for mentions purged meanwhile are dropped instead of failing the batch.
    """
    latest: dict[tuple[str, str, str], Enrichment] = {}
    for item in items:
        latest[(item.mention_id, item.stage, item.model_version)] = item
    ids = sorted({key[0] for key in latest})
    seqs: dict[str, int] = {}
    for part in chunks(ids):
        seqs.update(
            (row.id, row.seq)
            for row in conn.execute(sa.select(mention.c.id, mention.c.seq).where(mention.c.id.in_(part)))
        )
    known = seqs.keys()
    rows = [
        {
            "mention_id": e.mention_id,
            "stage": e.stage,
            "model_version": e.model_version,
            "data": e.data,
            "created_at": now,
        }
        for e in latest.values()
        if e.mention_id in known
    ]
    if not rows:
        return 0
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    stmt = insert(enrichment)
    stmt = stmt.on_conflict_do_update(
        index_elements=["mention_id", "stage", "model_version"],
        set_={"data": stmt.excluded.data, "created_at": stmt.excluded.created_at},
    )
    conn.execute(stmt, rows)
    # Same created_at for the whole batch: like `results_for`, the greatest model version wins a tie.
    newest = {(e.mention_id, e.stage): e for _, e in sorted(latest.items()) if e.mention_id in known}
    labels.replace(conn, ((seqs[mid], stage, e.data) for (mid, stage), e in newest.items()))
    return len(rows)


def enriched_ids(conn: Connection, mention_ids: Sequence[str], stage: str, model_version: str) -> set[str]:
    """Which of these mentions already hold (stage, model_version): an index-only probe, no data decoded."""
    found: set[str] = set()
    for part in chunks(list(dict.fromkeys(mention_ids))):
        stmt = sa.select(enrichment.c.mention_id).where(
            enrichment.c.mention_id.in_(part), enrichment.c.stage == stage, enrichment.c.model_version == model_version
        )
        found.update(conn.execute(stmt).scalars())
    return found


def results_for(
    conn: Connection, mention_ids: Sequence[str], stage: str | None, model_version: str | None
) -> dict[str, dict[str, dict[str, Any]]]:
    """mention_id → stage → data; per stage the newest row wins unless a model version is given."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for part in chunks(list(dict.fromkeys(mention_ids))):
        stmt = sa.select(enrichment.c.mention_id, enrichment.c.stage, enrichment.c.data).where(
            enrichment.c.mention_id.in_(part)
        )
        if stage is not None:
            stmt = stmt.where(enrichment.c.stage == stage)
        if model_version is not None:
            stmt = stmt.where(enrichment.c.model_version == model_version)
        stmt = stmt.order_by(enrichment.c.created_at, enrichment.c.model_version)
        for row in conn.execute(stmt):
            out.setdefault(row.mention_id, {})[row.stage] = dict(row.data or {})
    return out
