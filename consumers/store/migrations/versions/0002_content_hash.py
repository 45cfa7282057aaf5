"""Event identity: the content fingerprint of every applied event and stored delivery, so that
a reused id with other content is told apart from a duplicate.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("applied_events") as batch:
        batch.add_column(sa.Column("content_hash", sa.String(64), nullable=True))
    with op.batch_alter_table("inbox_deliveries") as batch:
        batch.add_column(sa.Column("content_hash", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("inbox_deliveries") as batch:
        batch.drop_column("content_hash")
    with op.batch_alter_table("applied_events") as batch:
        batch.drop_column("content_hash")
