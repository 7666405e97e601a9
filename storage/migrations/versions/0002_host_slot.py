"""Per-host request slots shared by every process using the database (rate limits across processes).

Revision ID: 0002_host_slot
Revises: 0002_query_speed
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_host_slot"
down_revision: str | None = "0002_query_speed"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "host_slot",
        sa.Column("host", sa.String(255), primary_key=True),
        sa.Column("last_at", sa.Float()),
        sa.Column("deferred_until", sa.Float()),
    )


def downgrade() -> None:
    op.drop_table("host_slot")
