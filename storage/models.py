"""SQLModel tables: the schema the alembic migrations create, and what the Core queries run against.

`mention.seq` is the integer rowid (SQLite) / identity (PostgreSQL): FTS5 external-content tables
need a stable integer key, and keyset pagination over an integer is cheap. `mention.id`
(= ``Mention.id``) is the logical key every lookup and foreign key uses.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlmodel import Field, SQLModel


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Always write UTC and always read tz-aware UTC, whatever the backend does with zones.

    SQLite has no zone support (SQLAlchemy stores a fixed-width, sortable naive string), so aware
    values are converted to UTC and stripped; PostgreSQL uses ``timestamptz``.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    # SQLite fast path: the same text SQLAlchemy's DATETIME writes ("2026-01-02 03:04:05.000006"), made by
    # one C call instead of TypeDecorator + format-string layers. Ingestion binds three per mention.
    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        def process(value: datetime | None) -> str | None:
            if value is None:
                return None
            if value.tzinfo is UTC:  # the usual case: drop the "+00:00" instead of building a naive copy
                return value.isoformat(" ", "microseconds")[:-6]
            if value.tzinfo is not None:
                value = value.astimezone(UTC).replace(tzinfo=None)
            return value.isoformat(" ", "microseconds")

        return process

    def result_processor(self, dialect: Dialect, coltype: object) -> Callable[[Any], Any] | None:
        if dialect.name != "sqlite":
            return super().result_processor(dialect, coltype)

        def process(value: str | None) -> datetime | None:
            return None if value is None else datetime.fromisoformat(value).replace(tzinfo=UTC)

        return process


def json_type() -> sa.types.TypeEngine[Any]:
    """JSON text on SQLite, JSONB on PostgreSQL (JSONB has equality, so DISTINCT/GROUP BY work)."""
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def one_shot_encoder(encoder: json.JSONEncoder) -> Callable[[Any], str]:
    """`encoder.encode` with the C encoder built once instead of at every call.

    Same text (the very encoder `JSONEncoder.encode` builds, minus the circular-reference check,
    which parsed JSON never needs); for the small values of a mention the per-call setup costs more
    than the encoding, and ingestion encodes three per mention. Plain `encode` without the C module.
    """
    make = getattr(json.encoder, "c_make_encoder", None)  # the C accelerator; absent on some Pythons
    if make is None or encoder.indent is not None or encoder.check_circular is False:
        return encoder.encode
    escape = json.encoder.encode_basestring_ascii if encoder.ensure_ascii else json.encoder.encode_basestring
    c_encode = make(
        None,
        encoder.default,
        escape,
        None,
        encoder.key_separator,
        encoder.item_separator,
        encoder.sort_keys,
        encoder.skipkeys,
        encoder.allow_nan,
    )
    return lambda value: "".join(c_encode(value, 0))


_ENCODE = one_shot_encoder(json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str))


def dumps(value: Any) -> str:
    """The JSON serializer for every JSON column: compact, UTF-8 kept, odd values stringified.

    NUL becomes U+FFFD: PostgreSQL's JSONB rejects \\u0000, and one scraped control character
    must not fail a whole batch.
    """
    text = _ENCODE(value)
    return _ENCODE(_without_nul(value)) if "\\u0000" in text else text


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_without_nul(v) for v in value]
    return value


def _dt(*, nullable: bool = True) -> Any:
    return Field(default=None, sa_type=UTCDateTime, nullable=nullable)


_LIVE_SQLITE = sa.text("deleted = 0")
_LIVE_PG = sa.text("deleted = false")
_THREADED = sa.text("thread_id IS NOT NULL")


class MentionRow(SQLModel, table=True):
    __tablename__: ClassVar[str] = "mention"
    __table_args__ = (
        sa.Index("ix_mention_source_created_at", "source", "created_at"),
        sa.Index("ix_mention_created_at", "created_at"),
        sa.Index("ix_mention_kind", "kind"),
        sa.Index("ix_mention_author", "author"),
        # Live mentions only (every read filters deleted = false): time-range COUNTs read just the index, and
        # stats by watch group its (day, matched) entries. PostgreSQL has it without `matched` (migration 0004).
        sa.Index(
            "ix_mention_live_created_at",
            "created_at",
            "source",
            "matched",
            sqlite_where=_LIVE_SQLITE,
            postgresql_where=_LIVE_PG,
        ),
        sa.Index(
            "ix_mention_live_source_created_at",
            "source",
            "created_at",
            sqlite_where=_LIVE_SQLITE,
            postgresql_where=_LIVE_PG,
        ),
        sa.Index(
            "ix_mention_source_thread",
            "source",
            "thread_id",
            "created_at",
            sqlite_where=_THREADED,
            postgresql_where=_THREADED,
        ),
        {"sqlite_autoincrement": True},
    )

    seq: int | None = Field(
        default=None, primary_key=True, sa_type=sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    )
    id: str = Field(max_length=64, unique=True)
    source: str = Field(max_length=200)
    kind: str = Field(max_length=50)
    native_id: str = Field(sa_type=sa.Text)
    url: str | None = Field(default=None, sa_type=sa.Text)
    title: str | None = Field(default=None, sa_type=sa.Text)
    text: str = Field(sa_type=sa.Text)
    author: str | None = Field(default=None, max_length=500)
    created_at: datetime = _dt(nullable=False)
    fetched_at: datetime = _dt(nullable=False)
    updated_at: datetime = _dt(nullable=False)
    thread_id: str | None = Field(default=None, sa_type=sa.Text)
    parent_id: str | None = Field(default=None, sa_type=sa.Text)
    score: float | None = None
    comments: int | None = None
    rating: float | None = None
    language: str | None = Field(default=None, max_length=20)
    matched: list[str] = Field(default_factory=list, sa_type=json_type(), nullable=False)
    extra: dict[str, Any] = Field(default_factory=dict, sa_type=json_type(), nullable=False)
    raw: str | None = Field(default=None, sa_type=sa.Text)
    content_hash: str = Field(max_length=64)
    deleted: bool = Field(default=False)


class MentionWatchRow(SQLModel, table=True):
    """One row per (mention, watch name): filtering by watch is an indexed join, not a JSON scan."""

    __tablename__: ClassVar[str] = "mention_watch"
    __table_args__ = (sa.Index("ix_mention_watch_watch", "watch"),)

    mention_id: str = Field(
        sa_column=sa.Column(sa.String(64), sa.ForeignKey("mention.id", ondelete="CASCADE"), primary_key=True)
    )
    watch: str = Field(max_length=200, primary_key=True)


class MentionLabelRow(SQLModel, table=True):
    """The newest enrichment's labels (name: topic/intent/stage/lang/sentiment/canonical, lowercased value).

    Rows, not JSON, so label filters and stats grouped by label are indexed joins (see storage.labels).
    """

    __tablename__: ClassVar[str] = "mention_label"
    __table_args__ = (sa.Index("ix_mention_label_name_value", "name", "value", "seq"),)

    seq: int = Field(
        sa_column=sa.Column(
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            sa.ForeignKey("mention.seq", ondelete="CASCADE"),
            primary_key=True,
        )
    )
    name: str = Field(max_length=20, primary_key=True)
    value: str = Field(max_length=200, primary_key=True)


class SourceStateRow(SQLModel, table=True):
    __tablename__: ClassVar[str] = "source_state"

    source: str = Field(max_length=200, primary_key=True)
    cursor: str | None = Field(default=None, sa_type=sa.Text)
    last_run_at: datetime | None = _dt()
    last_success_at: datetime | None = _dt()
    last_error: str | None = Field(default=None, sa_type=sa.Text)
    last_error_at: datetime | None = _dt()
    consecutive_failures: int = Field(default=0)
    notes: list[str] = Field(default_factory=list, sa_type=json_type(), nullable=False)
    total_mentions: int = Field(default=0)


class RunRow(SQLModel, table=True):
    __tablename__: ClassVar[str] = "run"
    __table_args__ = (sa.Index("ix_run_source_id", "source", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    source: str = Field(max_length=200)
    started_at: datetime = _dt(nullable=False)
    finished_at: datetime | None = _dt()
    status: str = Field(max_length=20)
    new: int = Field(default=0)
    duplicates: int = Field(default=0)
    updated: int = Field(default=0)
    error: str | None = Field(default=None, sa_type=sa.Text)
    notes: list[str] = Field(default_factory=list, sa_type=json_type(), nullable=False)


class EnrichmentRow(SQLModel, table=True):
    """Keyed by model version so re-enrichment with a new model keeps the old results (history)."""

    __tablename__: ClassVar[str] = "enrichment"
    __table_args__ = (sa.Index("ix_enrichment_stage_version", "stage", "model_version"),)

    mention_id: str = Field(
        sa_column=sa.Column(sa.String(64), sa.ForeignKey("mention.id", ondelete="CASCADE"), primary_key=True)
    )
    stage: str = Field(max_length=100, primary_key=True)
    model_version: str = Field(max_length=200, primary_key=True)
    data: dict[str, Any] = Field(default_factory=dict, sa_type=json_type(), nullable=False)
    created_at: datetime = _dt(nullable=False)


class HostSlotRow(SQLModel, table=True):
    """Each host's last booked request time and Retry-After deferral (wall-clock seconds), shared by every
    process using this database so they keep one rate per host together (see storage.host_slots)."""

    __tablename__: ClassVar[str] = "host_slot"

    host: str = Field(max_length=255, primary_key=True)
    last_at: float | None = None
    deferred_until: float | None = None


class AlertRow(SQLModel, table=True):
    """One fired alert. `key` is what one incident is (a watch, an emerging cluster): the cooldown is per key."""

    __tablename__: ClassVar[str] = "alert"
    __table_args__ = (sa.Index("ix_alert_key_at", "key", "at"), sa.Index("ix_alert_at", "at"))

    id: str = Field(max_length=32, primary_key=True)
    kind: str = Field(max_length=20)
    key: str = Field(max_length=300)
    subject: str = Field(max_length=300)
    at: datetime = _dt(nullable=False)
    data: dict[str, Any] = Field(default_factory=dict, sa_type=json_type(), nullable=False)


def _table(model: type[SQLModel]) -> sa.Table:
    table = model.__table__  # type: ignore[attr-defined]
    assert isinstance(table, sa.Table)
    return table


metadata = SQLModel.metadata
mention = _table(MentionRow)
mention_watch = _table(MentionWatchRow)
mention_label = _table(MentionLabelRow)
source_state = _table(SourceStateRow)
run = _table(RunRow)
enrichment = _table(EnrichmentRow)
host_slot = _table(HostSlotRow)
alert = _table(AlertRow)
