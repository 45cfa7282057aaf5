"""The tables of the Joint Information Box's store (PLANR_JIB_DB_URL), declared on the shared
metadata of :mod:`consumers.store.tables` (migration ``0005j``; see docs/jib.md).

Lists (panels, approvals, objections) are stored as comma-separated labels, as elsewhere.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, String, Table, Text

from consumers.store.tables import UtcDateTime, metadata

#: Every proposal taken, open or decided. ``grounds`` is content: it lives here and nowhere
#: else (never in logs, metrics, audit records or errors). Lists are comma-separated labels.
jib_proposals = Table(
    "jib_proposals",
    metadata,
    Column("proposal_id", String(36), primary_key=True),
    Column("proposer", String(32), nullable=False),
    Column("arrondissement", String(32), nullable=False),
    Column("subject_id", String(64), nullable=False, index=True),
    Column("action", String(8), nullable=False),  # insert | remove
    Column("grounds", Text, nullable=False),
    Column("proposed_at", UtcDateTime, nullable=False),
    Column("deadline", UtcDateTime, nullable=False),
    Column("panel", String(255), nullable=False),  # the services whose consent it needs
    Column("approvals", String(255), nullable=False),  # in vote order
    Column("objections", String(255), nullable=False),
    Column("outcome", String(16)),  # null while open | adopted | rejected | expired
    Column("decided_at", UtcDateTime),
    Column("deciding_vote", String(36)),
    # its place in the input's order; a tick expires the proposals of its own partition
    Column("topic_partition", Integer, nullable=False),
    Column("topic_offset", BigInteger, nullable=False),
    Column("content_hash", String(64), nullable=False),
)
Index("ix_jib_proposals_open", jib_proposals.c.outcome, jib_proposals.c.deadline)

#: Every vote taken: counted, or refused with the reason. ``reason`` (content) is kept for
#: counted votes only.
jib_votes = Table(
    "jib_votes",
    metadata,
    Column("vote_id", String(36), primary_key=True),
    Column("proposal_id", String(36), nullable=False, index=True),
    Column("service", String(16), nullable=False),
    Column("choice", String(8), nullable=False),  # approve | object
    Column("reason", Text),
    Column("cast_at", UtcDateTime, nullable=False),
    Column("status", String(24), nullable=False),  # counted | the refusal reason
    Column("topic_offset", BigInteger, nullable=False),
    Column("content_hash", String(64), nullable=False),
)

#: Exactly one decision per proposal (the unique proposal id says so to the database too).
jib_decisions = Table(
    "jib_decisions",
    metadata,
    Column("decision_id", String(36), primary_key=True),
    Column("proposal_id", String(36), nullable=False, unique=True),
    Column("proposer", String(32), nullable=False),
    Column("arrondissement", String(32), nullable=False),
    Column("subject_id", String(64), nullable=False),
    Column("action", String(8), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("decided_at", UtcDateTime, nullable=False),
    Column("deciding_vote", String(36)),
    Column("approvals", String(255), nullable=False),
    Column("objections", String(255), nullable=False),
)

#: The JIB's current members, per arrondissement: a person inserted by an adopted proposal
#: and not removed since. The history stays in the tables above.
jib_members = Table(
    "jib_members",
    metadata,
    Column("subject_id", String(64), primary_key=True),
    Column("arrondissement", String(32), primary_key=True),
    Column("since", UtcDateTime, nullable=False),
    Column("proposal_id", String(36), nullable=False),  # the adopted insertion
    Column("proposer", String(32), nullable=False),
    Column("panel", String(255), nullable=False),
)

#: The JIB's clock: the latest tick taken from each input partition.
jib_clock = Table(
    "jib_clock",
    metadata,
    Column("topic", String(255), primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("at", UtcDateTime, nullable=False),
)

#: Every consultation of the JIB (show, list, members), for the oversight bodies.
jib_consultations = Table(
    "jib_consultations",
    metadata,
    Column("consultation_id", String(36), primary_key=True),
    Column("consulted_at", UtcDateTime, nullable=False, index=True),
    Column("party", String(32), nullable=False),
    Column("verb", String(8), nullable=False),  # show | list | members
    Column("target", String(64)),  # the proposal or subject asked about
    Column("query", String(128), nullable=False),
    Column("answer_class", String(24), nullable=False),
)
