"""Initial schema: mentions, watch index, source health, runs, enrichments and full-text search.

Revision ID: 0001
Revises:
Create Date: 2026-11-25

Self-contained on purpose (plain SQLAlchemy types, no imports from storage.models): a migration
must keep producing the same schema after the models move on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FTS_COLUMNS = "title, text, author"

SQLITE_FTS = [
    f"""CREATE VIRTUAL TABLE mention_fts USING fts5(
        {FTS_COLUMNS}, content='mention', content_rowid='seq', tokenize='unicode61 remove_diacritics 2')""",
    # save_batch sets fts_bulk.active inside its transaction and indexes the whole batch with one
    # INSERT … SELECT: a trigger writing to FTS5 row by row costs ~4x the indexing itself, because
    # FTS5 flushes its pending terms at every statement savepoint. Every other writer gets the trigger.
    "CREATE TABLE fts_bulk (active INTEGER NOT NULL)",
    "INSERT INTO fts_bulk (active) VALUES (0)",
    f"""CREATE TRIGGER mention_fts_ai AFTER INSERT ON mention
    WHEN coalesce((SELECT active FROM fts_bulk), 0) = 0 BEGIN
        INSERT INTO mention_fts(rowid, {FTS_COLUMNS}) VALUES (new.seq, new.title, new.text, new.author);
    END""",
    f"""CREATE TRIGGER mention_fts_ad AFTER DELETE ON mention BEGIN
        INSERT INTO mention_fts(mention_fts, rowid, {FTS_COLUMNS})
        VALUES ('delete', old.seq, old.title, old.text, old.author);
    END""",
    # Only text columns: score/matched refreshes must not churn the full-text index.
    f"""CREATE TRIGGER mention_fts_au AFTER UPDATE OF title, text, author ON mention BEGIN
        INSERT INTO mention_fts(mention_fts, rowid, {FTS_COLUMNS})
        VALUES ('delete', old.seq, old.title, old.text, old.author);
        INSERT INTO mention_fts(rowid, {FTS_COLUMNS}) VALUES (new.seq, new.title, new.text, new.author);
    END""",
]

# 'simple' = no stemming and no stop words, like FTS5 unicode61: search behaves the same on both backends.
POSTGRES_FTS = [
    """ALTER TABLE mention ADD COLUMN search tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('simple', coalesce(title, '')), 'A')
        || setweight(to_tsvector('simple', coalesce(text, '')), 'B')
        || setweight(to_tsvector('simple', coalesce(author, '')), 'C')) STORED""",
    "CREATE INDEX ix_mention_search ON mention USING GIN (search)",
]


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "mention",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False, unique=True),
        sa.Column("source", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(50), nullable=False),
        sa.Column("native_id", sa.Text(), nullable=False),
        sa.Column("url", sa.Text()),
        sa.Column("title", sa.Text()),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("author", sa.String(500)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("thread_id", sa.Text()),
        sa.Column("parent_id", sa.Text()),
        sa.Column("score", sa.Float()),
        sa.Column("comments", sa.Integer()),
        sa.Column("rating", sa.Float()),
        sa.Column("language", sa.String(20)),
        sa.Column("matched", _json(), nullable=False),
        sa.Column("extra", _json(), nullable=False),
        sa.Column("raw", sa.Text()),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_mention_source_created_at", "mention", ["source", "created_at"])
    op.create_index("ix_mention_created_at", "mention", ["created_at"])
    op.create_index("ix_mention_kind", "mention", ["kind"])
    op.create_index("ix_mention_author", "mention", ["author"])

    op.create_table(
        "mention_watch",
        sa.Column("mention_id", sa.String(64), sa.ForeignKey("mention.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("watch", sa.String(200), primary_key=True),
    )
    op.create_index("ix_mention_watch_watch", "mention_watch", ["watch"])

    op.create_table(
        "source_state",
        sa.Column("source", sa.String(200), primary_key=True),
        sa.Column("cursor", sa.Text()),
        sa.Column("last_run_at", sa.DateTime(timezone=True)),
        sa.Column("last_success_at", sa.DateTime(timezone=True)),
        sa.Column("last_error", sa.Text()),
        sa.Column("last_error_at", sa.DateTime(timezone=True)),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False),
        sa.Column("notes", _json(), nullable=False),
        sa.Column("total_mentions", sa.Integer(), nullable=False),
    )

    op.create_table(
        "run",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("source", sa.String(200), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("new", sa.Integer(), nullable=False),
        sa.Column("duplicates", sa.Integer(), nullable=False),
        sa.Column("updated", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text()),
        sa.Column("notes", _json(), nullable=False),
    )
    op.create_index("ix_run_source_id", "run", ["source", "id"])

    op.create_table(
        "enrichment",
        sa.Column("mention_id", sa.String(64), sa.ForeignKey("mention.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("stage", sa.String(100), primary_key=True),
        sa.Column("model_version", sa.String(200), primary_key=True),
        sa.Column("data", _json(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_enrichment_stage_version", "enrichment", ["stage", "model_version"])

    dialect = op.get_bind().dialect.name
    for statement in SQLITE_FTS if dialect == "sqlite" else POSTGRES_FTS if dialect == "postgresql" else []:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for name in ("mention_fts_au", "mention_fts_ad", "mention_fts_ai"):
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
        op.execute("DROP TABLE IF EXISTS mention_fts")
        op.execute("DROP TABLE IF EXISTS fts_bulk")
    for table in ("enrichment", "run", "source_state", "mention_watch", "mention"):
        op.drop_table(table)
