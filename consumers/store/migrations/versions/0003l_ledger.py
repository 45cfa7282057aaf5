"""A signal's life: the router's ledger (event states, holdings, the log of its
consultations), and versions and retractions in the inboxes.

Revision ID: 0003l
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003l"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

_TS = sa.DateTime(timezone=False)


def upgrade() -> None:
    op.create_table(
        "ledger_events",
        sa.Column("event_id", sa.String(36), primary_key=True),
        sa.Column("agency", sa.String(16), nullable=False),
        sa.Column("subject_id", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("withdrawn", sa.Boolean, nullable=False),
        sa.Column("fingerprint", sa.String(64)),
        sa.Column("classification", sa.String(16)),
        sa.Column("handling", sa.String(4)),
        sa.Column("tlp", sa.String(16)),
        sa.Column("local_sharing", sa.Boolean),
        sa.Column("named", sa.String(2048)),
    )
    op.create_index("ix_ledger_events_subject_id", "ledger_events", ["subject_id"])
    op.create_table(
        "ledger_holdings",
        sa.Column("event_id", sa.String(36), primary_key=True),
        sa.Column("recipient", sa.String(64), primary_key=True),
        sa.Column("delivery_id", sa.String(36), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("changed_at", _TS, nullable=False),
    )
    op.create_table(
        "ledger_consultations",
        sa.Column("consultation_id", sa.String(36), primary_key=True),
        sa.Column("operator", sa.String(64), nullable=False),
        sa.Column("purpose", sa.Text, nullable=False),
        sa.Column("query", sa.String(16), nullable=False),
        sa.Column("query_id", sa.String(64), nullable=False),
        sa.Column("rows", sa.Integer, nullable=False),
        sa.Column("consulted_at", _TS, nullable=False),
    )
    with op.batch_alter_table("inbox_deliveries") as batch:
        batch.alter_column("payload", existing_type=sa.LargeBinary, nullable=True)
        batch.add_column(sa.Column("version", sa.Integer, nullable=False, server_default="1"))
        batch.add_column(sa.Column("retracted_at", _TS))
        batch.add_column(sa.Column("retraction_reason", sa.String(32)))


def downgrade() -> None:
    with op.batch_alter_table("inbox_deliveries") as batch:
        batch.drop_column("retraction_reason")
        batch.drop_column("retracted_at")
        batch.drop_column("version")
        batch.alter_column("payload", existing_type=sa.LargeBinary, nullable=False)
    op.drop_table("ledger_consultations")
    op.drop_table("ledger_holdings")
    op.drop_index("ix_ledger_events_subject_id", "ledger_events")
    op.drop_table("ledger_events")
