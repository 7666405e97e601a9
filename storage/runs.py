"""Fetch runs and the per-source health they fold into (the SQL behind `Store`'s run methods).

A run row records one fetch of one source; `source_state` keeps what the health views need (last
success, failure streak, last error, notes) so `listener sources` never scans the run history.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from listener.errors import StorageError
from listener.types import Cursor
from storage import ingest
from storage.models import run, source_state
from storage.records import RunInfo, SourceState, run_info


def start(conn: Connection, source: str, now: datetime) -> int:
    """A new "running" run; a run of this source still "running" was cut short (SIGKILL, power loss)."""
    conn.execute(
        sa.update(run)
        .where(run.c.source == source, run.c.status == "running")
        .values(status="failed", finished_at=now, error="interrupted: the process ended during the run")
    )
    values = {"source": source, "started_at": now, "status": "running", "new": 0, "duplicates": 0}
    result = conn.execute(sa.insert(run).values(**values, updated=0, notes=[]))
    ingest.ensure_source(conn, source, {"last_run_at": now}, {"last_run_at": now})
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


def finish(
    conn: Connection,
    run_id: int,
    now: datetime,
    *,
    status: str,
    new: int,
    duplicates: int,
    updated: int,
    error: str | None,
    notes: Sequence[str],
) -> None:
    """Close a run. ok/partial → last_success_at, failure streak reset (a partial run still stored data);
    failed → streak + 1; an `error` with any status → last_error(+_at); notes replace the old ones."""
    source = conn.execute(sa.select(run.c.source).where(run.c.id == run_id)).scalar()
    if source is None:
        raise StorageError(f"run {run_id} does not exist")
    conn.execute(
        sa.update(run)
        .where(run.c.id == run_id)
        .values(
            finished_at=now,
            status=status,
            new=new,
            duplicates=duplicates,
            updated=updated,
            error=error,
            notes=list(notes),
        )
    )
    health: dict[str, Any] = {"notes": list(notes)}
    if status in ("ok", "partial"):
        health.update(last_success_at=now, consecutive_failures=0)
    else:
        health["consecutive_failures"] = source_state.c.consecutive_failures + 1
    if error is not None or status == "failed":
        health.update(last_error=error or "failed", last_error_at=now)
    initial = {k: (1 if k == "consecutive_failures" and status == "failed" else v) for k, v in health.items()}
    ingest.ensure_source(conn, source, initial, health)


def source_states(conn: Connection) -> list[SourceState]:
    """Every known source with its health and its latest run."""
    latest = sa.select(sa.func.max(run.c.id)).group_by(run.c.source)
    last_rows = conn.execute(sa.select(run).where(run.c.id.in_(latest))).mappings()
    last_runs = {r.source: r for r in map(run_info, last_rows)}
    return [
        SourceState(
            source=row["source"],
            cursor=Cursor.from_json(row["cursor"]),
            last_run_at=row["last_run_at"],
            last_success_at=row["last_success_at"],
            last_error=row["last_error"],
            last_error_at=row["last_error_at"],
            consecutive_failures=row["consecutive_failures"],
            notes=tuple(row["notes"] or ()),
            total_mentions=row["total_mentions"],
            last_run=last_runs.get(row["source"]),
        )
        for row in conn.execute(sa.select(source_state).order_by(source_state.c.source)).mappings()
    ]


def history(conn: Connection, source: str | None, limit: int) -> list[RunInfo]:
    """Newest first."""
    stmt = sa.select(run).order_by(run.c.id.desc()).limit(limit)
    if source is not None:
        stmt = stmt.where(run.c.source == source)
    return [run_info(row) for row in conn.execute(stmt).mappings()]
