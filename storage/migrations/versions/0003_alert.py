"""Alert history in the database: one row per fired alert, so the cooldown works across machines.

Revision ID: 0003_alert
Revises: 0002_host_slot
Create Date: 2026-11-25

The JSONL file beside a SQLite database could not be shared by several daemons on one
PostgreSQL store; `listener.alerts` imports an existing file into this table once.
Self-contained (plain SQLAlchemy types), like 0001.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003_alert"
down_revision: str | None = "0002_host_slot"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "alert",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("key", sa.String(300), nullable=False),
        sa.Column("subject", sa.String(300), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("data", _json(), nullable=False),
    )
    op.create_index("ix_alert_key_at", "alert", ["key", "at"])
    op.create_index("ix_alert_at", "alert", ["at"])


def downgrade() -> None:
    op.drop_table("alert")
