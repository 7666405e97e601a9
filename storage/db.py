"""Engines, URLs, SQLite pragmas, migrations and error translation: everything below the Store API.

Every SQLAlchemy error leaves this package as a `StorageError` with one readable line, because
the CLI prints errors instead of tracebacks.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event, exc
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.pool import StaticPool

from listener.errors import StorageError
from storage.models import dumps

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
BUSY_TIMEOUT_MS = 5000
WAL_CHECKPOINT_PAGES = 10_000
# SQLite's page cache per connection (its default is 2 MB). 16 MB: ingest into a store already holding 100 k
# mentions 15.7 k -> 18.9 k/s wall (idle 2-core VM, 2026-11-25; 32 and 64 MB no better; mmap no gain).
SQLITE_CACHE_MB = int(os.environ.get("LISTENER_SQLITE_CACHE_MB", "16"))
MIGRATION_LOCK = 0x6C697374656E6572  # "listener": the PostgreSQL advisory lock held while migrating


def resolve_url(target: str | Path) -> URL:
    """A file path, ``sqlite:///path``, ``:memory:`` or a PostgreSQL URL → a SQLAlchemy URL.

    Plain ``postgresql://``/``postgres://`` URLs get the psycopg (v3) driver, the one we depend on.
    """
    text = str(target).strip()
    if not text:
        raise StorageError("empty database path")
    if text == ":memory:":
        return make_url("sqlite://")
    if "://" not in text:
        return URL.create("sqlite", database=str(Path(text).expanduser()))
    scheme = text.split("://", 1)[0].lower()
    if scheme in ("postgres", "postgresql"):
        text = "postgresql+psycopg://" + text.split("://", 1)[1]
    try:
        url = make_url(text)
    except exc.ArgumentError as e:
        raise StorageError(f"invalid database URL {mask(text)}: {e}") from None
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        raise StorageError(
            f"unsupported database {url.get_backend_name()!r} in {mask(text)} (use SQLite or PostgreSQL)"
        )
    if url.get_backend_name() == "postgresql" and url.get_driver_name() != "psycopg":
        url = url.set(drivername="postgresql+psycopg")
    return url


def mask(url: str | URL) -> str:
    """The URL as it may be printed: any password replaced by ***."""
    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except exc.ArgumentError:
        return "<invalid URL>"
    return parsed.render_as_string(hide_password=True)


def is_memory(url: URL) -> bool:
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def check_sqlite_path(url: URL) -> None:
    """Fail early, naming the path, instead of letting SQLite say 'unable to open database file'."""
    if is_memory(url) or not url.database or url.database.startswith("file:"):
        return
    path = Path(url.database)
    parent = path.parent
    if not parent.exists():
        raise StorageError(f"cannot open database {path}: directory {parent} does not exist")
    if not parent.is_dir():
        raise StorageError(f"cannot open database {path}: {parent} is not a directory")
    if path.exists():
        if path.is_dir():
            raise StorageError(f"cannot open database {path}: it is a directory")
        if not os.access(path, os.R_OK | os.W_OK):
            raise StorageError(f"cannot open database {path}: file is not readable and writable")
    # WAL needs to create -wal/-shm files next to the database, so the directory must be writable too.
    if not os.access(parent, os.W_OK | os.X_OK):
        raise StorageError(f"cannot open database {path}: directory {parent} is not writable")


def _sqlite_on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN, so transactions (and DDL) are real and explicit.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    try:
        cur.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.execute(f"PRAGMA cache_size = {-1024 * SQLITE_CACHE_MB}")
        mode = _enter_wal(cur)
        if mode and str(mode[0]).lower() == "wal":
            cur.execute("PRAGMA synchronous = NORMAL")  # durable enough in WAL mode, much faster
            # Checkpoint every ~40 MB of WAL instead of 4 MB: on a large store each ingested batch dirties
            # pages all over the random-id and FTS indexes, and a page rewritten by several batches is then
            # copied (and fsynced) once per checkpoint rather than once per batch (+17% on a 300k store).
            cur.execute(f"PRAGMA wal_autocheckpoint = {WAL_CHECKPOINT_PAGES}")
    finally:
        cur.close()


def _enter_wal(cur: sqlite3.Cursor) -> Any:
    """`PRAGMA journal_mode = WAL`, waiting out other processes doing the same on a fresh file.

    SQLite does not call the busy handler for a journal-mode change, so two processes opening a new
    database at once (a cron fetch beside the daemon) could fail with "database is locked" at once.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    pause = 0.005
    while True:
        try:
            return cur.execute("PRAGMA journal_mode = WAL").fetchone()
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() >= deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.1)


def _sqlite_on_begin(conn: Connection) -> None:
    # Writers ask for IMMEDIATE so a read-then-write transaction never hits SQLITE_BUSY mid-way.
    mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
    conn.exec_driver_sql(f"BEGIN {mode}")


def create_engine(url: URL) -> Engine:
    kwargs: dict[str, Any] = {"json_serializer": dumps, "future": True}
    if url.get_backend_name() == "sqlite":
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000}
        if is_memory(url):
            kwargs["poolclass"] = StaticPool  # one shared connection, or every checkout sees an empty db
    else:
        kwargs["pool_pre_ping"] = True
    engine = sa.create_engine(url, **kwargs)
    if url.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def describe(error: BaseException) -> str:
    """One line from a DB-API / SQLAlchemy error, without the SQL and parameter dump."""
    orig = getattr(error, "orig", None) or error
    text = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    return text


@contextlib.contextmanager
def translate_errors(what: str, where: str) -> Iterator[None]:
    """Turn any SQLAlchemy/DB-API failure into a StorageError naming the operation and database."""
    try:
        yield
    except StorageError:
        raise
    except (exc.SQLAlchemyError, sqlite3.Error) as e:
        raise StorageError(f"{what} failed ({where}): {describe(e)}") from e


# --- migrations -----------------------------------------------------------------------------------


def alembic_config(connection: Connection | None = None) -> Config:
    """Programmatic alembic config: no alembic.ini at runtime, migrations located next to this file."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "storage/migrations has no revisions"
    return head


def known_revisions() -> set[str]:
    return {script.revision for script in ScriptDirectory.from_config(alembic_config()).walk_revisions()}


def current_revision(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def ensure_not_newer(revision: str | None) -> None:
    if revision is not None and revision not in known_revisions():
        raise StorageError(
            f"database schema {revision} is newer than this listener ({head_revision()}); upgrade listener"
        )


def upgrade(engine: Engine) -> None:
    """`alembic upgrade head` on this engine, refusing schemas written by a newer listener."""
    with engine.connect() as conn:
        revision = current_revision(conn)
        conn.rollback()
    ensure_not_newer(revision)
    if revision == head_revision():
        return  # the common case: no write lock taken just to open a database
    with engine.connect().execution_options(sqlite_begin="IMMEDIATE") as conn, conn.begin():
        if conn.dialect.name == "postgresql":
            # Several processes opening a fresh database at once (daemon workers, a cron fetch) must not
            # create the same tables side by side: the first migrates, the others then find it done.
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(MIGRATION_LOCK)))
        command.upgrade(alembic_config(conn), "head")
