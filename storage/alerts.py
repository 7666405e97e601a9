"""Alert history: record an alert unless its incident already alerted, list recent ones, import old files.

`claim` is the cooldown check and the insert in one transaction, serialised per key (SQLite: the
write lock taken up front; PostgreSQL: a transaction-scoped advisory lock on the key's hash), so two
daemons on one database, or a daemon and `listener alerts --check`, never announce one incident twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, RowMapping

from storage.ingest import chunks
from storage.models import alert


@dataclass
class AlertRecord:
    """A stored alert: `key` names the incident (cooldown scope), `data` is the alert as the caller built it."""

    id: str
    kind: str
    key: str
    subject: str
    at: datetime
    data: dict[str, Any] = field(default_factory=dict)


def _record(row: RowMapping) -> AlertRecord:
    return AlertRecord(row["id"], row["kind"], row["key"], row["subject"], row["at"], dict(row["data"] or {}))


def _row(r: AlertRecord) -> dict[str, Any]:
    return {"id": r.id, "kind": r.kind, "key": r.key[:300], "subject": r.subject[:300], "at": r.at, "data": r.data}


def _lock_key(conn: Connection, key: str) -> None:
    if conn.dialect.name == "postgresql":
        number = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big", signed=True)
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": number})


def latest_for(conn: Connection, key: str, since: datetime) -> AlertRecord | None:
    stmt = (sa.select(alert).where(alert.c.key == key[:300], alert.c.at > since)
            .order_by(alert.c.at.desc()).limit(1))
    row = conn.execute(stmt).mappings().first()
    return _record(row) if row is not None else None


def claim(conn: Connection, record: AlertRecord, cooldown: timedelta,
          same_incident: Callable[[AlertRecord], bool] | None = None) -> AlertRecord | None:
    """Insert `record` unless its incident alerted within `cooldown` before it; returns that earlier alert, else None.

    The incident is the key, or with `same_incident` also any recent alert of the same kind the predicate
    accepts (an emerging cluster whose id changed but whose mentions did not); the lock then covers the kind.
    """
    _lock_key(conn, record.key if same_incident is None else f"kind:{record.kind}")
    earlier = latest_for(conn, record.key, record.at - cooldown)
    if earlier is None and same_incident is not None:
        recent = since(conn, record.at - cooldown, record.kind, 1000)
        earlier = next((r for r in recent if r.at > record.at - cooldown and same_incident(r)), None)
    if earlier is not None:
        return earlier
    conn.execute(sa.insert(alert).values(**_row(record)))
    return None


def update_data(conn: Connection, alert_id: str, data: dict[str, Any]) -> bool:
    return bool(conn.execute(sa.update(alert).where(alert.c.id == alert_id).values(data=data)).rowcount)


def since(conn: Connection, start: datetime, kind: str | None, limit: int) -> list[AlertRecord]:
    stmt = sa.select(alert).where(alert.c.at >= start).order_by(alert.c.at.desc(), alert.c.id).limit(limit)
    if kind is not None:
        stmt = stmt.where(alert.c.kind == kind)
    return [_record(row) for row in conn.execute(stmt).mappings()]


def import_records(conn: Connection, records: Sequence[AlertRecord]) -> int:
    """Insert records whose id is not stored yet (idempotent: importing the same file twice adds nothing)."""
    rows = {r.id: _row(r) for r in records}
    for part in chunks(list(rows)):
        for known in conn.execute(sa.select(alert.c.id).where(alert.c.id.in_(part))).scalars():
            rows.pop(known, None)
    if not rows:
        return 0
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    for batch in chunks(list(rows.values())):  # DO NOTHING: a concurrent importer may have won the race
        conn.execute(insert(alert).on_conflict_do_nothing(index_elements=["id"]), batch)
    return len(rows)


def scrub_purged(conn: Connection, *, source: str | None, author: str | None, before: datetime | None) -> int:
    """Drop the quotes of purged mentions from stored alerts (data rights reach alert history too).

    A quote goes when every given filter matches it: its source, its author, and — a quote being
    no newer than the alert that carried it — the alert's time before the cut. Counts, signals and
    member ids stay: they name no one.
    Returns how many alerts changed.
    """
    stmt = sa.select(alert)
    if before is not None:
        stmt = stmt.where(alert.c.at < before)
    changed = 0
    for row in conn.execute(stmt).mappings().all():
        data = dict(row["data"] or {})
        quotes = [q for q in data.get("quotes") or [] if isinstance(q, dict)]
        kept = [
            q
            for q in quotes
            if not ((source is None or q.get("source") == source) and (author is None or q.get("author") == author))
        ]
        if len(kept) == len(quotes):
            continue
        gone_urls = {q.get("url") for q in quotes if q not in kept}
        data["quotes"] = kept
        if data.get("link") in gone_urls:
            data["link"] = next((q.get("url") for q in kept if q.get("url")), None)
        update_data(conn, row["id"], data)
        changed += 1
    return changed
