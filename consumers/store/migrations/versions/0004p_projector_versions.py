"""A signal's life in the common database: the projector keeps, for each event, its latest
version (with the view it applied and its arrival position) or a retraction marker, so that a
fiche can be rebuilt when an event is corrected or retracted; the governance audit records
each version of an event.

Events stored before this revision have no view and no position: a fiche they contributed to
cannot be rebuilt (the projector says so and stops); re-project such a database from its topic.

Revision ID: 0004p
Revises: 0003n
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004p"
down_revision: str | None = "0003n"
branch_labels: str | None = None
depends_on: str | None = None

_TS = sa.DateTime(timezone=False)
_AUDIT_COLUMNS = "event_id, reason, agency, subject_id, detail, at"


def upgrade() -> None:
    with op.batch_alter_table("applied_events") as batch:
        batch.add_column(sa.Column("version", sa.Integer, nullable=False, server_default="1"))
        batch.add_column(sa.Column("topic_partition", sa.Integer))
        batch.add_column(sa.Column("topic_offset", sa.BigInteger))
        batch.add_column(sa.Column("view", sa.LargeBinary))
        batch.add_column(sa.Column("retracted_at", _TS))
        batch.add_column(sa.Column("retraction_reason", sa.String(32)))
    op.create_index("ix_applied_events_subject_id", "applied_events", ["subject_id"])
    _governance_audit("governance_audit_v", with_version=True)
    op.execute(f"INSERT INTO governance_audit_v ({_AUDIT_COLUMNS}, version) "  # noqa: S608
               f"SELECT {_AUDIT_COLUMNS}, 1 FROM governance_audit")
    op.drop_table("governance_audit")
    op.rename_table("governance_audit_v", "governance_audit")


def downgrade() -> None:
    _governance_audit("governance_audit_o", with_version=False)
    op.execute(f"INSERT INTO governance_audit_o ({_AUDIT_COLUMNS}) "  # noqa: S608
               f"SELECT {_AUDIT_COLUMNS} FROM governance_audit AS g WHERE g.version = "
               "(SELECT MIN(h.version) FROM governance_audit AS h "
               "WHERE h.event_id = g.event_id AND h.reason = g.reason)")
    op.drop_table("governance_audit")
    op.rename_table("governance_audit_o", "governance_audit")
    op.drop_index("ix_applied_events_subject_id", "applied_events")
    with op.batch_alter_table("applied_events") as batch:
        for column in ("retraction_reason", "retracted_at", "view", "topic_offset",
                       "topic_partition", "version"):
            batch.drop_column(column)


def _governance_audit(name: str, *, with_version: bool) -> None:
    version = [sa.Column("version", sa.Integer, primary_key=True)] if with_version else []
    op.create_table(
        name,
        sa.Column("event_id", sa.String(36), primary_key=True),
        *version,
        sa.Column("reason", sa.String(32), primary_key=True),
        sa.Column("agency", sa.String(16), nullable=False),
        sa.Column("subject_id", sa.String(64), nullable=False),
        sa.Column("detail", sa.String(128), nullable=False),
        sa.Column("at", _TS, nullable=False),
    )
