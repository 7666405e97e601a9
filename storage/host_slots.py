"""Per-host request slots in the database: the `SlotReserver` HttpClient uses when it has a store.

Booking is one INSERT … ON CONFLICT DO UPDATE … RETURNING, atomic on both backends (SQLite under
BEGIN IMMEDIATE, PostgreSQL by the row lock the upsert takes), so processes sharing the database
queue up one interval apart instead of all taking the same slot. Times are whatever clock the
client passes: the wall clock in production, so every process (and machine, NTP-synchronised)
reads them alike.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from storage.models import host_slot

Transaction = Callable[[str], contextlib.AbstractContextManager[Connection]]
"""Opens one write transaction named for error messages (Store's, which takes SQLite's lock up front)."""


def _greatest(conn: Connection, *values: Any) -> Any:
    """SQLite's scalar max(a, b, …) is PostgreSQL's greatest(a, b, …)."""
    return sa.func.greatest(*values) if conn.dialect.name == "postgresql" else sa.func.max(*values)


def _insert(conn: Connection) -> Any:
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(host_slot)


def reserve(conn: Connection, host: str, interval: float, now: float) -> float:
    """Book and return the next slot: max(now, last booking + interval, deferral)."""
    stmt = _insert(conn).values(host=host, last_at=now)
    slot = _greatest(
        conn,
        stmt.excluded.last_at,
        sa.func.coalesce(host_slot.c.last_at + sa.literal(interval, sa.Float()), stmt.excluded.last_at),
        sa.func.coalesce(host_slot.c.deferred_until, stmt.excluded.last_at),
    )
    stmt = stmt.on_conflict_do_update(index_elements=["host"], set_={"last_at": slot}).returning(host_slot.c.last_at)
    return float(conn.execute(stmt).scalar_one())


def defer(conn: Connection, host: str, until: float) -> None:
    stmt = _insert(conn).values(host=host, deferred_until=until)
    later = _greatest(
        conn,
        sa.func.coalesce(host_slot.c.deferred_until, stmt.excluded.deferred_until),
        stmt.excluded.deferred_until,
    )
    conn.execute(stmt.on_conflict_do_update(index_elements=["host"], set_={"deferred_until": later}))


class HostSlots:
    """`listener.http.SlotReserver` on the store's database: each call is one short write transaction."""

    def __init__(self, transaction: Transaction) -> None:
        self._transaction = transaction

    def reserve(self, host: str, interval: float, clock: Callable[[], float]) -> float:
        with self._transaction(f"book a request slot for host {host!r}") as conn:
            return reserve(conn, host, interval, clock())  # read under SQLite's write lock, not before it

    def defer(self, host: str, until: float) -> None:
        with self._transaction(f"defer requests to host {host!r}") as conn:
            defer(conn, host, until)
