"""Enrichment backfill split into fixed `seq` windows, so several workers can share one large store.

A window is `[start, start + size)` of `mention.seq`; the same store gives every process the same
windows, so a per-window job lock keeps two workers off the same mentions (listener/queue.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from listener.types import Mention
from storage.enrichments import _missing
from storage.models import mention
from storage.records import to_mention


def pending_windows(
    conn: Connection, stages: Sequence[tuple[str, str]], size: int, limit: int, from_seq: int = 0
) -> tuple[list[int], int]:
    """Start seqs of the first `limit` windows holding a mention (seq >= from_seq) that lacks any
    (stage, version), and the highest seq stored (0 when empty): the caller's next `from_seq`."""
    if size < 1 or limit < 1:
        raise ValueError("window size and limit must be at least 1")
    top = int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(mention.c.seq), 0))).scalar_one())
    if not stages:
        return [], top
    start = (mention.c.seq // size) * size
    stmt = (
        sa.select(start.label("start"))
        .distinct()
        .where(mention.c.seq >= from_seq, sa.or_(*(_missing(name, version) for name, version in stages)))
        .order_by("start")
        .limit(limit)
    )
    return [int(row.start) for row in conn.execute(stmt)], top


def unenriched_in_window(
    conn: Connection, stage: str, model_version: str, after_seq: int, until_seq: int, batch_size: int
) -> tuple[list[Mention], int]:
    """Like enrichments.unenriched_batch, but only seq in (after_seq, until_seq)."""
    stmt = (
        sa.select(mention)
        .where(mention.c.seq > after_seq, mention.c.seq < until_seq, _missing(stage, model_version))
        .order_by(mention.c.seq)
        .limit(batch_size)
    )
    rows = conn.execute(stmt).mappings().all()
    return [to_mention(row) for row in rows], (rows[-1]["seq"] if rows else after_seq)
