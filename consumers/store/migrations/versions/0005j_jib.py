"""The Joint Information Box (JIB): proposals, votes, decisions, members, clock, consultations.

Revision ID: 0005j
Revises: 0003o
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005j"
down_revision: str | None = "0003o"
branch_labels: str | None = None
depends_on: str | None = None

_TS = sa.DateTime(timezone=False)


def upgrade() -> None:
    _proposals_and_votes()
    _decisions_and_members()
    _clock_and_consultations()


def _proposals_and_votes() -> None:
    op.create_table(
        "jib_proposals",
        sa.Column("proposal_id", sa.String(36), primary_key=True),
        sa.Column("proposer", sa.String(32), nullable=False),
        sa.Column("arrondissement", sa.String(32), nullable=False),
        sa.Column("subject_id", sa.String(64), nullable=False),
        sa.Column("action", sa.String(8), nullable=False),
        sa.Column("grounds", sa.Text, nullable=False),
        sa.Column("proposed_at", _TS, nullable=False),
        sa.Column("deadline", _TS, nullable=False),
        sa.Column("panel", sa.String(255), nullable=False),
        sa.Column("approvals", sa.String(255), nullable=False),
        sa.Column("objections", sa.String(255), nullable=False),
        sa.Column("outcome", sa.String(16)),
        sa.Column("decided_at", _TS),
        sa.Column("deciding_vote", sa.String(36)),
        sa.Column("topic_partition", sa.Integer, nullable=False),
        sa.Column("topic_offset", sa.BigInteger, nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
    )
    op.create_index("ix_jib_proposals_subject_id", "jib_proposals", ["subject_id"])
    op.create_index("ix_jib_proposals_open", "jib_proposals", ["outcome", "deadline"])
    op.create_table(
        "jib_votes",
        sa.Column("vote_id", sa.String(36), primary_key=True),
        sa.Column("proposal_id", sa.String(36), nullable=False),
        sa.Column("service", sa.String(16), nullable=False),
        sa.Column("choice", sa.String(8), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("cast_at", _TS, nullable=False),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("topic_offset", sa.BigInteger, nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
    )
    op.create_index("ix_jib_votes_proposal_id", "jib_votes", ["proposal_id"])


def _decisions_and_members() -> None:
    op.create_table(
        "jib_decisions",
        sa.Column("decision_id", sa.String(36), primary_key=True),
        sa.Column("proposal_id", sa.String(36), nullable=False, unique=True),
        sa.Column("proposer", sa.String(32), nullable=False),
        sa.Column("arrondissement", sa.String(32), nullable=False),
        sa.Column("subject_id", sa.String(64), nullable=False),
        sa.Column("action", sa.String(8), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("decided_at", _TS, nullable=False),
        sa.Column("deciding_vote", sa.String(36)),
        sa.Column("approvals", sa.String(255), nullable=False),
        sa.Column("objections", sa.String(255), nullable=False),
    )
    op.create_table(
        "jib_members",
        sa.Column("subject_id", sa.String(64), primary_key=True),
        sa.Column("arrondissement", sa.String(32), primary_key=True),
        sa.Column("since", _TS, nullable=False),
        sa.Column("proposal_id", sa.String(36), nullable=False),
        sa.Column("proposer", sa.String(32), nullable=False),
        sa.Column("panel", sa.String(255), nullable=False),
    )


def _clock_and_consultations() -> None:
    op.create_table(
        "jib_clock",
        sa.Column("topic", sa.String(255), primary_key=True),
        sa.Column("partition", sa.Integer, primary_key=True),
        sa.Column("at", _TS, nullable=False),
    )
    op.create_table(
        "jib_consultations",
        sa.Column("consultation_id", sa.String(36), primary_key=True),
        sa.Column("consulted_at", _TS, nullable=False),
        sa.Column("party", sa.String(32), nullable=False),
        sa.Column("verb", sa.String(8), nullable=False),
        sa.Column("target", sa.String(64)),
        sa.Column("query", sa.String(128), nullable=False),
        sa.Column("answer_class", sa.String(24), nullable=False),
    )
    op.create_index("ix_jib_consultations_consulted_at", "jib_consultations", ["consulted_at"])


def downgrade() -> None:
    for table in ("jib_consultations", "jib_clock", "jib_members", "jib_decisions",
                  "jib_votes", "jib_proposals"):
        op.drop_table(table)
