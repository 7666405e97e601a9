"""procrastinate's tables in our PostgreSQL database: apply its schema once, read its worker heartbeats.

procrastinate (the job queue of the PostgreSQL scale-out mode, listener/queue.py) owns its schema and
its SQL; it lives beside ours but outside the alembic chain. `apply_schema` is idempotent and safe
when several `listener db upgrade` run at once (a transaction-scoped advisory lock serialises them).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

from listener.errors import StorageError
from storage import db
from storage.store import Store

MARKER_TABLE = "procrastinate_jobs"
_LOCK_KEY = 0x6C69_7374  # "list": any constant; only `apply_schema` callers take it


@dataclass(frozen=True)
class WorkerRow:
    id: int
    last_heartbeat: datetime
    seconds_since_heartbeat: float
    running: tuple[str, ...]
    """`task(args)` of the jobs this worker is doing."""


def require_postgres(store: Store) -> None:
    if store.dialect != "postgresql":
        raise StorageError(
            f"{store.display_url} is SQLite: the job queue (several `listener daemon` workers) needs a PostgreSQL "
            'store ([storage] url = "postgresql://…"); a SQLite daemon schedules everything in its one process'
        )


def available() -> bool:
    """procrastinate installed (the `postgres` extra)? Single-node PostgreSQL works without it."""
    import importlib.util

    return importlib.util.find_spec("procrastinate") is not None


def conninfo(store: Store) -> str:
    """A libpq URL for psycopg/procrastinate from the store's SQLAlchemy URL (password included)."""
    url: URL = make_url(store.url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


def schema_present(store: Store) -> bool:
    require_postgres(store)
    with db.translate_errors("look for the job queue schema", store.display_url), store.engine.connect() as conn:
        return bool(sa.inspect(conn).has_table(MARKER_TABLE))


def apply_schema(store: Store) -> bool:
    """Create procrastinate's tables and functions unless present. True when they were created now."""
    from procrastinate.schema import SchemaManager

    require_postgres(store)
    with db.translate_errors("apply the job queue schema", store.display_url), store.engine.begin() as conn:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
        if sa.inspect(conn).has_table(MARKER_TABLE):
            return False
        raw = conn.connection.driver_connection
        assert raw is not None
        raw.execute(SchemaManager.get_schema())  # no parameters: psycopg sends the script as-is
        return True


def workers(store: Store) -> list[WorkerRow]:
    """Registered procrastinate workers (one per `listener daemon` process), newest heartbeat first."""
    require_postgres(store)
    query = sa.text(
        "SELECT w.id, w.last_heartbeat, EXTRACT(EPOCH FROM (NOW() - w.last_heartbeat)) AS age, "
        "COALESCE(array_agg(j.task_name || '(' || j.args::text || ')' ORDER BY j.id) "
        "FILTER (WHERE j.id IS NOT NULL), ARRAY[]::text[]) AS running "
        "FROM procrastinate_workers w LEFT JOIN procrastinate_jobs j ON j.worker_id = w.id AND j.status = 'doing' "
        "GROUP BY w.id, w.last_heartbeat ORDER BY w.last_heartbeat DESC, w.id"
    )
    with db.translate_errors("list job queue workers", store.display_url), store.engine.connect() as conn:
        return [
            WorkerRow(int(r.id), r.last_heartbeat, float(r.age), tuple(r.running))
            for r in conn.execute(query)
        ]
