"""Storage fixtures: a fresh Store per test on SQLite, and on a throwaway PostgreSQL cluster.

The cluster comes from tests/support/postgres.py (fixtures registered in tests/conftest.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from listener.types import Mention
from storage import Store
from tests.support.postgres import BACKENDS

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A migrated, empty Store on each backend."""
    if request.param == "postgres":
        s = Store.open(request.getfixturevalue("pg_shared_url"))
        with s.engine.begin() as conn:  # every table of ours, so a new table can't leak rows between tests
            tables = conn.exec_driver_sql(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
                " AND tablename <> 'alembic_version' AND left(tablename, 13) <> 'procrastinate'"
            ).scalars().all()
            conn.exec_driver_sql(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY")
    else:
        s = Store.open(tmp_path / "listener.db")
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "listener.db")
    try:
        yield s
    finally:
        s.close()


def make_mention(n: int = 0, *, source: str = "hn", **overrides: Any) -> Mention:
    """A deterministic mention; `n` varies id, time (n minutes after T0), text and author."""
    values: dict[str, Any] = {
        "source": source,
        "kind": "hackernews",
        "native_id": f"item-{n}",
        "url": f"https://news.example.com/item?id={n}",
        "title": f"Thread {n}",
        "text": f"Message number {n} about things",
        "author": f"user{n}",
        "created_at": T0 + timedelta(minutes=n),
        "fetched_at": T0 + timedelta(hours=1),
    }
    values.update(overrides)
    return Mention(**values)


@pytest.fixture
def mention_factory() -> Callable[..., Mention]:
    return make_mention
