"""Opening databases: targets, bad paths, schema versions, and models ↔ migration agreement."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from listener.errors import StorageError
from storage import Store
from storage.db import head_revision, resolve_url
from storage.models import metadata
from tests.storage.conftest import make_mention


def test_open_file_path_creates_migrated_wal_database(tmp_path: Path) -> None:
    path = tmp_path / "listener.db"
    with Store.open(path) as store:
        assert store.schema_revision() == head_revision()
        assert store.check() == []
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 5000
            assert conn.exec_driver_sql("PRAGMA cache_size").scalar() == -16 * 1024  # 16 MB, not the 2 MB default
    assert path.exists()


@pytest.mark.parametrize("form", ["sqlite_url", "str_path"])
def test_open_url_forms(tmp_path: Path, form: str) -> None:
    path = tmp_path / "x.db"
    target = f"sqlite:///{path}" if form == "sqlite_url" else str(path)
    with Store.open(target) as store:
        store.save_batch("hn", [make_mention(1)], None)
    with Store.open(path) as again:
        assert again.count() == 1


def test_memory_database_keeps_data_across_calls() -> None:
    with Store.open(":memory:") as store:
        store.save_batch("hn", [make_mention(1)], None)
        assert store.count() == 1
        assert store.search("message").items


def test_missing_directory_is_one_line_storage_error(tmp_path: Path) -> None:
    target = tmp_path / "nope" / "listener.db"
    with pytest.raises(StorageError, match="does not exist") as info:
        Store.open(target)
    assert str(target) in str(info.value) and "\n" not in str(info.value)
    assert not target.parent.exists()  # never created


def test_parent_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StorageError, match="not a directory"):
        Store.open(tmp_path / "file" / "listener.db")


def test_target_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="is a directory"):
        Store.open(tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_unwritable_directory(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(StorageError, match="not writable"):
            Store.open(locked / "listener.db")
    finally:
        locked.chmod(0o700)


def test_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "listener.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StorageError, match=r"listener\.db") as info:
        Store.open(path)
    assert "not a database" in str(info.value)


@pytest.mark.parametrize("url", ["mysql://u:secret@host/db", "sqlite+foo:////x"])
def test_unsupported_url_never_shows_password(url: str) -> None:
    with pytest.raises(StorageError) as info:
        Store.open(url)
    assert "secret" not in str(info.value)


def test_postgres_urls_get_the_psycopg_driver() -> None:
    assert resolve_url("postgres://u:pw@h/db").drivername == "postgresql+psycopg"
    assert resolve_url("postgresql://u:pw@h/db").drivername == "postgresql+psycopg"


def test_unreachable_postgres_is_storage_error_with_masked_password() -> None:
    pytest.importorskip("psycopg")
    with pytest.raises(StorageError) as info:
        Store.open("postgresql://user:hunter2@127.0.0.1:1/db?connect_timeout=2")
    assert "hunter2" not in str(info.value) and "***" in str(info.value)


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "listener.db"
    Store.open(path).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE alembic_version SET version_num = '9999_future'")
    with pytest.raises(StorageError, match=rf"schema 9999_future is newer than this listener \({head_revision()}\)"):
        Store.open(path)
    with pytest.raises(StorageError, match="newer"):
        Store.open(path, upgrade=False)


def test_upgrade_false_leaves_schema_alone_until_upgrade(tmp_path: Path) -> None:
    with Store.open(tmp_path / "fresh.db", upgrade=False) as store:
        assert store.schema_revision() is None
        assert store.check()[0].startswith("schema revision is empty")
        with pytest.raises(StorageError, match="no such table"):
            store.count()
        store.upgrade()
        assert store.schema_revision() == head_revision()
        assert store.check() == []


def test_reopen_is_idempotent(tmp_path: Path) -> None:
    for _ in range(2):
        with Store.open(tmp_path / "listener.db") as store:
            assert store.schema_revision() == head_revision()


def test_closed_store_raises(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "listener.db")
    store.close()
    store.close()  # idempotent
    with pytest.raises(StorageError, match="closed"):
        store.count()


def test_database_errors_are_storage_errors(tmp_path: Path) -> None:
    with Store.open(tmp_path / "listener.db") as store:
        with store.engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE run")
        with pytest.raises(StorageError, match=r"start run of source 'hn' failed .*no such table: run"):
            store.start_run("hn")


def _schema_diffs(store: Store) -> list[object]:
    """Autogenerate's view of models vs migrated database, minus the full-text objects we add by hand."""
    with store.engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata)
    fts = ("mention_fts", "fts_bulk", "alembic_version")
    return [
        d
        for d in diffs
        if not (isinstance(d, tuple) and d[0] == "remove_table" and d[1].name.startswith(fts))
        and not (isinstance(d, tuple) and d[0] == "remove_column" and d[3].name == "search")
        and not (isinstance(d, tuple) and d[0] == "remove_index" and d[1].name == "ix_mention_search")
        and not (store.engine.dialect.name == "postgresql" and _is_live_time_index(d))
    ]


def _is_live_time_index(diff: object) -> bool:
    """PostgreSQL keeps ix_mention_live_created_at without `matched` (migration 0004: B-tree entry size cap)."""
    return (
        isinstance(diff, tuple)
        and diff[0] in ("add_index", "remove_index")
        and (diff[1].name == "ix_mention_live_created_at")
    )


def test_migration_matches_models(store: Store) -> None:
    assert _schema_diffs(store) == []


@pytest.mark.postgres
def test_postgres_has_generated_search_column(pg_url: str) -> None:
    with Store.open(pg_url) as store:
        assert store.display_url.startswith("postgresql+psycopg://postgres@127.0.0.1")
        with store.engine.connect() as conn:
            kinds: dict[str, str] = dict(
                conn.execute(
                    sa.text(
                        "SELECT column_name, is_generated FROM information_schema.columns WHERE table_name='mention'"
                    )
                ).all()
            )
        assert kinds["search"] == "ALWAYS"


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs /proc")
def test_uncreatable_file_even_for_root() -> None:
    with pytest.raises(StorageError, match=r"/proc/listener\.db") as info:
        Store.open("/proc/listener.db")
    assert "\n" not in str(info.value)


def _open_when_released(path: str, start: Any) -> str:
    start.wait()
    try:
        with Store.open(path) as store:
            return store.schema_revision() or "empty"
    except StorageError as e:
        return str(e)


def test_processes_opening_one_fresh_sqlite_file_together_all_succeed(tmp_path: Path) -> None:
    # A cron fetch started beside the daemon on a new database: SQLite answers a journal-mode change
    # that races another connection with "database is locked" without waiting, so open must retry it.
    # Before the retry this failed in about one round in five with three processes.
    context = multiprocessing.get_context("fork")
    with context.Manager() as manager, context.Pool(4) as pool:
        for round_ in range(12):
            path = str(tmp_path / f"fresh{round_}.db")
            start = manager.Barrier(4)
            results = pool.starmap(_open_when_released, [(path, start)] * 4)
            assert results == [head_revision()] * 4, results
