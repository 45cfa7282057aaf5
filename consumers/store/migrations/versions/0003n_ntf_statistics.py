"""The National Taskforce's statistics: facts by event id, counts, published months and cells.

Revision ID: 0003n
Revises: 0003l
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003n"
down_revision: str | None = "0003l"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "ntf_events",
        sa.Column("event_id", sa.String(64), primary_key=True),
        sa.Column("period", sa.String(7), nullable=False),
        sa.Column("arrondissement", sa.String(64), nullable=False),
        sa.Column("phenomena", sa.String(512), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("late", sa.Boolean, nullable=False),
    )
    op.create_table(
        "ntf_counts",
        sa.Column("period", sa.String(7), primary_key=True),
        sa.Column("arrondissement", sa.String(64), primary_key=True),
        sa.Column("phenomenon", sa.String(64), primary_key=True),
        sa.Column("count", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "ntf_months",
        sa.Column("period", sa.String(7), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("threshold", sa.Integer, nullable=False),
        sa.Column("policy_version", sa.String(64), nullable=False),
        sa.Column("cells", sa.Integer, nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=False), nullable=False),
    )
    op.create_table(
        "ntf_published",
        sa.Column("period", sa.String(7), primary_key=True),
        sa.Column("arrondissement", sa.String(64), primary_key=True),
        sa.Column("phenomenon", sa.String(64), primary_key=True),
        sa.Column("aggregate_id", sa.String(36), nullable=False),
        sa.Column("shown", sa.String(16), nullable=False),
        sa.Column("suppressed", sa.Boolean, nullable=False),
    )


def downgrade() -> None:
    for table in ("ntf_published", "ntf_months", "ntf_counts", "ntf_events"):
        op.drop_table(table)
