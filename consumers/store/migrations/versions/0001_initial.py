"""Common database (fiches, contributions, governance, consultations), outbox, inboxes.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

_TS = sa.DateTime(timezone=False)


def upgrade() -> None:
    _offsets_and_fiches()
    _contributions_and_governance()
    _consultations()
    _outbox_and_inboxes()


def _offsets_and_fiches() -> None:
    op.create_table(
        "consumer_offsets",
        sa.Column("consumer", sa.String(64), primary_key=True),
        sa.Column("topic", sa.String(255), primary_key=True),
        sa.Column("partition", sa.Integer, primary_key=True),
        sa.Column("next_offset", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "fiches",
        sa.Column("subject_id", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("statuses", sa.String(64), nullable=False),
        sa.Column("ftf_situation", sa.String(32)),
        sa.Column("ftf_country", sa.String(2)),
        sa.Column("ftf_at", _TS),
        sa.Column("threat_level", sa.Integer),
        sa.Column("basis", sa.String(32)),
        sa.Column("municipality", sa.String(8)),
        sa.Column("prison", sa.String(64)),
        sa.Column("arrondissement", sa.String(64)),
        sa.Column("location_at", _TS),
        sa.Column("first_info_at", _TS, nullable=False),
        sa.Column("last_info_at", _TS, nullable=False),
        sa.Column("included_at", _TS),
        sa.Column("removed_at", _TS),
        sa.Column("last_review_at", _TS),
        sa.Column("review_due", _TS),
        sa.Column("contributions", sa.Integer, nullable=False),
        sa.Column("last_event_id", sa.String(36), nullable=False),
    )
    op.create_index("ix_fiches_state_review_due", "fiches", ["state", "review_due"])


def _contributions_and_governance() -> None:
    op.create_table(
        "applied_events",
        sa.Column("event_id", sa.String(36), primary_key=True),
        sa.Column("delivery_id", sa.String(36), nullable=False),
        sa.Column("agency", sa.String(16), nullable=False),
        sa.Column("subject_id", sa.String(64), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
    )
    op.create_table(
        "contributions",
        sa.Column("event_id", sa.String(36), primary_key=True),
        sa.Column("subject_id", sa.String(64), nullable=False),
        sa.Column("agency", sa.String(16), nullable=False),
        sa.Column("occurred_at", _TS, nullable=False),
        sa.Column("published_at", _TS, nullable=False),
        sa.Column("statuses", sa.String(64), nullable=False),
        sa.Column("phenomena", sa.String(128), nullable=False),
        sa.Column("domains", sa.String(128), nullable=False),
        sa.Column("classification", sa.String(16), nullable=False),
        sa.Column("handling", sa.String(4), nullable=False),
        sa.Column("tlp", sa.String(16), nullable=False),
        sa.Column("reliability", sa.String(1), nullable=False),
        sa.Column("accuracy", sa.Integer, nullable=False),
    )
    op.create_index("ix_contributions_subject_id", "contributions", ["subject_id"])


def _consultations() -> None:
    op.create_table(
        "governance_audit",
        sa.Column("event_id", sa.String(36), primary_key=True),
        sa.Column("reason", sa.String(32), primary_key=True),
        sa.Column("agency", sa.String(16), nullable=False),
        sa.Column("subject_id", sa.String(64), nullable=False),
        sa.Column("detail", sa.String(128), nullable=False),
        sa.Column("at", _TS, nullable=False),
    )
    op.create_table(
        "consultations",
        sa.Column("consultation_id", sa.String(36), primary_key=True),
        sa.Column("consulted_at", _TS, nullable=False),
        sa.Column("service", sa.String(16), nullable=False),
        sa.Column("access_mode", sa.String(16), nullable=False),
        sa.Column("verb", sa.String(8), nullable=False),
        sa.Column("subject_id", sa.String(64)),
        sa.Column("query", sa.String(128), nullable=False),
        sa.Column("purpose", sa.Text, nullable=False),
        sa.Column("answer_class", sa.String(24), nullable=False),
    )
    op.create_index("ix_consultations_consulted_at", "consultations", ["consulted_at"])


def _outbox_and_inboxes() -> None:
    op.create_table(
        "outbox",
        sa.Column("message_id", sa.String(36), primary_key=True),
        sa.Column("kind", sa.String(24), nullable=False),
        sa.Column("message_key", sa.String(64), nullable=False),
        sa.Column("value", sa.LargeBinary, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("sent", sa.Boolean, nullable=False),
    )
    op.create_index("ix_outbox_sent", "outbox", ["sent", "created_at"])
    op.create_table(
        "inbox_deliveries",
        sa.Column("delivery_id", sa.String(36), primary_key=True),
        sa.Column("recipient", sa.String(64), nullable=False),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("rule", sa.String(64), nullable=False),
        sa.Column("rules", sa.String(512), nullable=False),
        sa.Column("policy_version", sa.String(64), nullable=False),
        sa.Column("routed_at", _TS, nullable=False),
        sa.Column("view", sa.String(32), nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("topic_partition", sa.Integer, nullable=False),
        sa.Column("topic_offset", sa.BigInteger, nullable=False),
    )
    op.create_index(
        "ix_inbox_recipient_position",
        "inbox_deliveries",
        ["recipient", "topic_partition", "topic_offset"],
    )


def downgrade() -> None:
    for table in ("inbox_deliveries", "outbox", "consultations", "governance_audit",
                  "contributions", "applied_events", "fiches", "consumer_offsets"):
        op.drop_table(table)
