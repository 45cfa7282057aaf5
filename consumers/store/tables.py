"""The tables of the common database, the durable inboxes, the NTF statistics and the JIB
(SQLAlchemy Core).

The migrations in ``consumers/store/migrations`` create exactly these tables; a test checks
that they agree. Every value stored by a projection is derived from its input records only
(no wall-clock time), so that replaying the same input yields the same rows; the one exception
is the NTF's publication bookkeeping (``ntf_months``, ``late``), which follows its clock.

Lists (statuses, phenomena, domains) are stored as sorted comma-separated labels, so that
SQLite and PostgreSQL hold identical values.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.types import TypeDecorator


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out; stored without zone on every backend."""

    impl = DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:  # noqa: ARG002
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def bind_processor(self, dialect: Dialect) -> Any:
        """On SQLite, one call per value instead of three (this type, then SQLite's DATETIME
        formatting through a dict: ~6 us a value, the bulk of a fiche upsert), giving the same
        text ``YYYY-MM-DD HH:MM:SS.ffffff`` (UTC)."""
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        def process(value: datetime | None) -> str | None:
            if value is None:
                return None
            if value.tzinfo is None:
                raise ValueError("naive datetime given to a UTC column")
            return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")

        return process

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:  # noqa: ARG002
        if value is None:
            return None
        if isinstance(value, str):  # pragma: no cover - SQLite returns datetimes via SQLAlchemy
            value = datetime.fromisoformat(value)
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC)


metadata = MetaData()

#: Input offsets of every store-backed consumer, written in the transaction of its outputs.
consumer_offsets = Table(
    "consumer_offsets",
    metadata,
    Column("consumer", String(64), primary_key=True),
    Column("topic", String(255), primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("next_offset", BigInteger, nullable=False),
)

#: One fiche per subject of the common database.
fiches = Table(
    "fiches",
    metadata,
    Column("subject_id", String(64), primary_key=True),
    Column("kind", String(16), nullable=False),
    # proposed (fed, not yet included by OCAM) | included | removed
    Column("state", String(16), nullable=False),
    Column("statuses", String(64), nullable=False),
    Column("ftf_situation", String(32)),
    Column("ftf_country", String(2)),
    Column("ftf_at", UtcDateTime),
    Column("threat_level", Integer),
    Column("basis", String(32)),
    Column("municipality", String(8)),
    Column("prison", String(64)),
    Column("arrondissement", String(64)),
    Column("location_at", UtcDateTime),
    Column("first_info_at", UtcDateTime, nullable=False),
    Column("last_info_at", UtcDateTime, nullable=False),
    Column("included_at", UtcDateTime),
    Column("removed_at", UtcDateTime),
    Column("last_review_at", UtcDateTime),
    Column("review_due", UtcDateTime),
    Column("contributions", Integer, nullable=False),
    Column("last_event_id", String(36), nullable=False),
)
Index("ix_fiches_state_review_due", fiches.c.state, fiches.c.review_due)

#: Every event the projector has taken: its latest version (applied or refused), or a
#: retraction marker (no content). The fiches are a fold of the applied views in arrival order.
applied_events = Table(
    "applied_events",
    metadata,
    Column("event_id", String(36), primary_key=True),
    Column("delivery_id", String(36), nullable=False),
    Column("agency", String(16), nullable=False),  # "" when only a retraction was seen
    Column("subject_id", String(64), nullable=False, index=True),  # "" once retracted
    Column("outcome", String(32), nullable=False),  # applied | feed_denied | retracted
    # the content fingerprint (planr.identity): same id + other content is a conflict
    Column("content_hash", String(64)),
    Column("version", Integer, nullable=False, server_default="1"),  # of the signal
    # arrival position of the event's first stored record (NULL: stored before 0004p)
    Column("topic_partition", Integer),
    Column("topic_offset", BigInteger),
    # the ftf_db view as delivered (Avro), for rebuilding a fiche; NULL unless applied
    Column("view", LargeBinary),
    Column("retracted_at", UtcDateTime),
    Column("retraction_reason", String(32)),
)

#: Each service's contribution to a fiche over time: ids and markings, never text.
contributions = Table(
    "contributions",
    metadata,
    Column("event_id", String(36), primary_key=True),
    Column("subject_id", String(64), nullable=False, index=True),
    Column("agency", String(16), nullable=False),
    Column("occurred_at", UtcDateTime, nullable=False),
    Column("published_at", UtcDateTime, nullable=False),
    Column("statuses", String(64), nullable=False),
    Column("phenomena", String(128), nullable=False),
    Column("domains", String(128), nullable=False),
    Column("classification", String(16), nullable=False),
    Column("handling", String(4), nullable=False),
    Column("tlp", String(16), nullable=False),
    Column("reliability", String(1), nullable=False),
    Column("accuracy", Integer, nullable=False),
)

#: Governance decisions taken by the projector: ignored OCAM fields, refused feeds (for
#: each version of an event as it arrived).
governance_audit = Table(
    "governance_audit",
    metadata,
    Column("event_id", String(36), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("reason", String(32), primary_key=True),
    Column("agency", String(16), nullable=False),
    Column("subject_id", String(64), nullable=False),
    Column("detail", String(128), nullable=False),  # labels only: fields, access mode
    Column("at", UtcDateTime, nullable=False),
)

#: Every consultation of the common database, for the oversight bodies (COC, Comite R).
consultations = Table(
    "consultations",
    metadata,
    Column("consultation_id", String(36), primary_key=True),
    Column("consulted_at", UtcDateTime, nullable=False, index=True),
    Column("service", String(16), nullable=False),
    Column("access_mode", String(16), nullable=False),
    Column("verb", String(8), nullable=False),  # show | list | pending | requests | answer
    Column("subject_id", String(64)),
    Column("query", String(128), nullable=False),
    Column("purpose", Text, nullable=False),
    Column("answer_class", String(24), nullable=False),
)

#: OCAM's queue of consultations forwarded by services with indirect access: written with the
#: consultation that forwarded it, answered by OCAM (who, when, which answer; never a text).
ocam_requests = Table(
    "ocam_requests",
    metadata,
    Column("request_id", String(36), primary_key=True),  # the consultation id
    Column("requested_at", UtcDateTime, nullable=False),
    Column("service", String(16), nullable=False),
    Column("verb", String(8), nullable=False),  # show | list (the forwarded consultation)
    Column("subject_id", String(64)),
    Column("query", String(128), nullable=False),
    Column("purpose", Text, nullable=False),
    Column("status", String(16), nullable=False),  # open | answered
    Column("answer", String(16)),  # hit | no_hit | refused
    Column("answered_at", UtcDateTime),
    Column("answered_by", String(16)),
    Column("answer_id", String(36)),  # the OcamAnswer message sent to the service
)
Index("ix_ocam_requests_status", ocam_requests.c.status, ocam_requests.c.requested_at)

#: Messages to publish (removal events, consultation audit, OCAM requests and answers), written
#: in the transaction that decided them and sent afterwards (at-least-once, deterministic ids).
outbox = Table(
    "outbox",
    metadata,
    Column("message_id", String(36), primary_key=True),
    # removal | consultation | ocam_request | ocam_answer | dead_letter
    Column("kind", String(24), nullable=False),
    Column("message_key", String(64), nullable=False),
    Column("value", LargeBinary, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("sent", Boolean, nullable=False, default=False),
)
Index("ix_outbox_sent", outbox.c.sent, outbox.c.created_at)

#: Durable inboxes of the TFL, WG and CSIL R recipients, deduplicated by delivery id.
inbox_deliveries = Table(
    "inbox_deliveries",
    metadata,
    Column("delivery_id", String(36), primary_key=True),
    Column("recipient", String(64), nullable=False),
    Column("event_id", String(36), nullable=False),
    Column("rule", String(64), nullable=False),
    Column("rules", String(512), nullable=False),
    Column("policy_version", String(64), nullable=False),
    Column("routed_at", UtcDateTime, nullable=False),
    Column("view", String(32), nullable=False),
    # the view record, Avro as delivered; NULL once retracted (the payload is gone)
    Column("payload", LargeBinary, nullable=True),
    Column("topic_partition", Integer, nullable=False),  # of the latest record applied
    Column("topic_offset", BigInteger, nullable=False),
    Column("content_hash", String(64)),  # of the payload (planr.identity)
    Column("version", Integer, nullable=False, server_default="1"),  # of the signal
    Column("retracted_at", UtcDateTime),
    Column("retraction_reason", String(32)),
)
Index(
    "ix_inbox_recipient_position",
    inbox_deliveries.c.recipient,
    inbox_deliveries.c.topic_partition,
    inbox_deliveries.c.topic_offset,
)

# ---- the router's ledger: who received what (ids and markings only) ----------------------

#: The state of every event the router has seen: its owner, latest version, markings.
ledger_events = Table(
    "ledger_events",
    metadata,
    Column("event_id", String(36), primary_key=True),
    Column("agency", String(16), nullable=False),
    Column("subject_id", String(64), nullable=False, index=True),
    Column("version", Integer, nullable=False),
    Column("withdrawn", Boolean, nullable=False),
    Column("fingerprint", String(64)),
    Column("classification", String(16)),
    Column("handling", String(4)),
    Column("tlp", String(16)),
    Column("local_sharing", Boolean),
    Column("named", String(2048)),
)

#: Every (event, recipient) that received a version; ``active`` false once retracted.
ledger_holdings = Table(
    "ledger_holdings",
    metadata,
    Column("event_id", String(36), primary_key=True),
    Column("recipient", String(64), primary_key=True),
    Column("delivery_id", String(36), nullable=False),
    Column("version", Integer, nullable=False),
    Column("active", Boolean, nullable=False),
    Column("changed_at", UtcDateTime, nullable=False),
)

#: Every use of ``planr ledger``: the oversight tool is itself overseen.
ledger_consultations = Table(
    "ledger_consultations",
    metadata,
    Column("consultation_id", String(36), primary_key=True),
    Column("operator", String(64), nullable=False),
    Column("purpose", Text, nullable=False),
    Column("query", String(16), nullable=False),  # event | subject
    Column("query_id", String(64), nullable=False),
    Column("rows", Integer, nullable=False),
    Column("consulted_at", UtcDateTime, nullable=False),
)

#: The National Taskforce's statistics (a store of its own, ``ntf.db``): every NtfFact taken,
#: by event id exactly, with its content fingerprint (same id, other content: a conflict).
#: ``late``: taken after its month was published (so not in the published table).
ntf_events = Table(
    "ntf_events",
    metadata,
    Column("event_id", String(64), primary_key=True),
    Column("period", String(7), nullable=False),
    Column("arrondissement", String(64), nullable=False),
    Column("phenomena", String(512), nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("late", Boolean, nullable=False),
)

#: The counts: signals per month, arrondissement and phenomenon (``none``: no phenomenon).
ntf_counts = Table(
    "ntf_counts",
    metadata,
    Column("period", String(7), primary_key=True),
    Column("arrondissement", String(64), primary_key=True),
    Column("phenomenon", String(64), primary_key=True),
    Column("count", BigInteger, nullable=False),
)

#: Each closed month, once published (or withheld when no table could protect its small
#: counts). A published month is final. ``published_at`` is the aggregator's clock.
ntf_months = Table(
    "ntf_months",
    metadata,
    Column("period", String(7), primary_key=True),
    Column("state", String(16), nullable=False),  # published | withheld
    Column("threshold", Integer, nullable=False),
    Column("policy_version", String(64), nullable=False),
    Column("cells", Integer, nullable=False),
    Column("published_at", UtcDateTime, nullable=False),
)

#: What the NTF was shown of each month: every entry of the table (``*``: a total), as shown.
ntf_published = Table(
    "ntf_published",
    metadata,
    Column("period", String(7), primary_key=True),
    Column("arrondissement", String(64), primary_key=True),
    Column("phenomenon", String(64), primary_key=True),
    Column("aggregate_id", String(36), nullable=False),
    Column("shown", String(16), nullable=False),
    Column("suppressed", Boolean, nullable=False),
)


# The JIB's tables live with the JIB (consumers/jib/tables.py), declared on this metadata: so
# that loading this module declares every table of every store (the migrations' reference).
import consumers.jib.tables  # noqa: E402, F401
