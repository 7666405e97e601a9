"""Query speed at 1M mentions: enrichment labels as rows, live-mention indexes for stats, a thread index.

Revision ID: 0002_query_speed
Revises: 0001
Create Date: 2026-11-25

- `mention_label` (seq, name, value): the newest enrichment's labels (topic, intent, stage, lang,
  sentiment, canonical) as indexed rows, so label filters and stats grouped by label are SQL joins
  instead of reading JSON for every mention. Backfilled here from the enrichment table.
- Partial indexes on live mentions (deleted = false) ordered by time and by source: a COUNT over a
  time range reads only the index.
- (source, thread_id, created_at) for the thread of a mention, oldest first.

Self-contained (no storage.models imports), like 0001.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_query_speed"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NEWEST = """NOT EXISTS (SELECT 1 FROM enrichment e2 WHERE e2.mention_id = e.mention_id AND e2.stage = e.stage
    AND (e2.created_at > e.created_at OR (e2.created_at = e.created_at AND e2.model_version > e.model_version)))"""


def _backfill(dialect: str) -> list[str]:
    """INSERT … SELECT per label kind from each mention's newest enrichment of that stage."""
    if dialect == "sqlite":
        field = "json_extract(e.data, '$.{0}')"
        topics = "json_each(e.data, '$.topics') t", "json_extract(t.value, '$.name')"
        canonical = "CASE WHEN coalesce(json_extract(e.data, '$.canonical'), 1) THEN 'true' ELSE 'false' END"
        insert = "INSERT OR IGNORE INTO mention_label (seq, name, value)"
    else:
        field = "(e.data ->> '{0}')"
        topics = "jsonb_array_elements(CASE WHEN jsonb_typeof(e.data -> 'topics') = 'array' " \
                 "THEN e.data -> 'topics' ELSE '[]'::jsonb END) t(value)", "(t.value ->> 'name')"  # fmt: skip
        canonical = "CASE WHEN coalesce((e.data ->> 'canonical')::boolean, true) THEN 'true' ELSE 'false' END"
        insert = "INSERT INTO mention_label (seq, name, value)"
    conflict = "" if dialect == "sqlite" else " ON CONFLICT DO NOTHING"
    single = (("sentiment", "sentiment", "label"), ("intent", "intent", "label"), ("journey", "stage", "label"),
              ("language", "lang", "lang"))  # fmt: skip
    statements = []
    for stage, name, key in single:
        value = f"lower(trim(CAST({field.format(key)} AS TEXT)))"
        statements.append(
            f"{insert} SELECT m.seq, '{name}', substr({value}, 1, 200) FROM enrichment e "
            f"JOIN mention m ON m.id = e.mention_id WHERE e.stage = '{stage}' AND {_NEWEST} "
            f"AND coalesce({value}, '') <> ''{conflict}"
        )
    source, topic = topics
    value = f"lower(trim(CAST({topic} AS TEXT)))"
    statements.append(
        f"{insert} SELECT m.seq, 'topic', substr({value}, 1, 200) FROM enrichment e "
        f"JOIN mention m ON m.id = e.mention_id, {source} WHERE e.stage = 'topics' AND {_NEWEST} "
        f"AND coalesce({value}, '') <> ''{conflict}"
    )
    statements.append(
        f"{insert} SELECT m.seq, 'canonical', {canonical} FROM enrichment e "
        f"JOIN mention m ON m.id = e.mention_id WHERE e.stage = 'duplicates' AND {_NEWEST}{conflict}"
    )
    return statements


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.create_table(
        "mention_label",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            sa.ForeignKey("mention.seq", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("name", sa.String(20), primary_key=True),
        sa.Column("value", sa.String(200), primary_key=True),
    )
    op.create_index("ix_mention_label_name_value", "mention_label", ["name", "value", "seq"])
    live = sa.text("deleted = 0" if dialect == "sqlite" else "deleted = false")
    op.create_index(
        "ix_mention_live_created_at", "mention", ["created_at", "source"], sqlite_where=live, postgresql_where=live
    )
    op.create_index(
        "ix_mention_live_source_created_at",
        "mention",
        ["source", "created_at"],
        sqlite_where=live,
        postgresql_where=live,
    )
    has_thread = sa.text("thread_id IS NOT NULL")
    op.create_index(
        "ix_mention_source_thread",
        "mention",
        ["source", "thread_id", "created_at"],
        sqlite_where=has_thread,
        postgresql_where=has_thread,
    )
    for statement in _backfill(dialect):
        op.execute(statement)


def downgrade() -> None:
    op.drop_index("ix_mention_source_thread", table_name="mention")
    op.drop_index("ix_mention_live_source_created_at", table_name="mention")
    op.drop_index("ix_mention_live_created_at", table_name="mention")
    op.drop_index("ix_mention_label_name_value", table_name="mention_label")
    op.drop_table("mention_label")
