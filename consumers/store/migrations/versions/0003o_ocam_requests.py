"""OCAM's worklist: the queue of consultations forwarded to OCAM (``ocam_requests``).

Consultations forwarded before this revision are queued too, as open requests, from the
consultation log (every forwarded consultation is there), so that none is lost.

Revision ID: 0003o
Revises: 0004p
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003o"
down_revision: str | None = "0004p"
branch_labels: str | None = None
depends_on: str | None = None

_TS = sa.DateTime(timezone=False)


def upgrade() -> None:
    op.create_table(
        "ocam_requests",
        sa.Column("request_id", sa.String(36), primary_key=True),
        sa.Column("requested_at", _TS, nullable=False),
        sa.Column("service", sa.String(16), nullable=False),
        sa.Column("verb", sa.String(8), nullable=False),
        sa.Column("subject_id", sa.String(64)),
        sa.Column("query", sa.String(128), nullable=False),
        sa.Column("purpose", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("answer", sa.String(16)),
        sa.Column("answered_at", _TS),
        sa.Column("answered_by", sa.String(16)),
        sa.Column("answer_id", sa.String(36)),
    )
    op.create_index("ix_ocam_requests_status", "ocam_requests", ["status", "requested_at"])
    _queue_forwarded_consultations()


def _queue_forwarded_consultations() -> None:
    names = ("request_id", "requested_at", "service", "verb", "subject_id", "query", "purpose")
    sources = ("consultation_id", "consulted_at", "service", "verb", "subject_id", "query",
               "purpose", "answer_class")
    requests = sa.table("ocam_requests", *(sa.column(n) for n in (*names, "status")))
    log = sa.table("consultations", *(sa.column(n) for n in sources))
    chosen = sa.select(*(log.c[n] for n in sources[:-1]), sa.literal("open")).where(
        log.c.answer_class == "forwarded")
    op.execute(requests.insert().from_select([*names, "status"], chosen))


def downgrade() -> None:
    op.drop_index("ix_ocam_requests_status", "ocam_requests")
    op.drop_table("ocam_requests")
