"""What the projector keeps of each event (``applied_events``) and what an arrival does to it.

One row per event id: its latest version as taken (``applied`` or ``feed_denied``, with the
view it applied and the arrival position of the event's first stored record), or, once
retracted, a marker with no content (version, time, reason; no subject, no view). Arrivals
follow the inboxes' rules (:func:`consumers.inbox_rows.merge`): a higher version replaces, a
lower one is stale, the same version again is a duplicate or (other content) a conflict, and a
retraction at version v removes every version up to v; only a delivery of a higher version
brings the event back. The same event id from another agency is a conflict.

:class:`Plan` collects, for one batch, the rows to write, the first versions that may take the
fast path (applied to their fiche as they come) and the subjects whose fiche must be rebuilt
(an event of theirs was corrected, retracted or moved to another subject).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiokafka import ConsumerRecord
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from consumers.ftf.fiche import governance_audits
from consumers.ftf.governance import AccessMode
from consumers.inbox_rows import Action, Kept, merge
from consumers.store.db import chunks_in
from consumers.store.tables import applied_events
from planr.identity import content_fingerprint

APPLIED = "applied"
FEED_DENIED = "feed_denied"
RETRACTED = "retracted"
#: The reason of the retractions that follow OCAM's removal of a subject.
REMOVED_FROM_DATABASE = "removed_from_database"


@dataclass(slots=True)
class Arrival:
    """One decoded record of the ``ftf-db`` topic: a delivery (``view`` set) or a retraction.
    What the projector reads of it again and again (subject, agency, the content fingerprint)
    is computed once, when it is decoded: :meth:`delivery`, :meth:`retraction_of`."""

    rec: ConsumerRecord
    event_id: str
    delivery_id: str
    version: int
    view: dict[str, Any] | None = None
    payload: bytes | None = None  # the view as delivered (Avro)
    reason: str | None = None  # of a retraction
    retracted_at: datetime | None = None
    subject_id: str = ""  # of a delivery's view ("" for a retraction)
    agency: str = ""  # of a delivery's view ("" for a retraction)
    fingerprint: str | None = None  # of a delivery's view (planr.identity)

    @classmethod
    def delivery(cls, rec: ConsumerRecord, envelope: Mapping[str, Any],
                 view: dict[str, Any], fingerprint: str | None = None) -> Arrival:
        """``fingerprint``: the view's, if already computed (else computed here)."""
        return cls(rec, view["event_id"], envelope["delivery_id"], envelope["version"], view,
                   envelope["payload"], subject_id=str(view["subject"]["id"]),
                   agency=str(view["agency"]),
                   fingerprint=fingerprint or content_fingerprint(view))

    @classmethod
    def retraction_of(cls, rec: ConsumerRecord, r: Mapping[str, Any]) -> Arrival:
        return cls(rec, r["event_id"], r["delivery_id"], r["version"], reason=r["reason"],
                   retracted_at=r["retracted_at"])

    @property
    def retraction(self) -> bool:
        return self.view is None


@dataclass(frozen=True)
class Taken:
    """What ``applied_events`` holds for one event id."""

    version: int
    content_hash: str | None
    retracted: bool
    agency: str
    subject_id: str
    seq: tuple[int | None, int | None]


async def load_taken(conn: AsyncConnection, event_ids: list[str]) -> dict[str, Taken]:
    t = applied_events
    found: dict[str, Taken] = {}
    for where in chunks_in(conn.dialect.name, t.c.event_id, event_ids):
        rows = await conn.execute(
            select(t.c.event_id, t.c.version, t.c.content_hash, t.c.outcome, t.c.agency,
                   t.c.subject_id, t.c.topic_partition, t.c.topic_offset).where(where))
        for r in rows:
            found[r[0]] = Taken(r[1], r[2], r[3] == RETRACTED, r[4], r[5], (r[6], r[7]))
    return found


def judge(taken: Taken | None, a: Arrival, fingerprint: str | None) -> Action:
    """What ``a`` does to the event as taken so far."""
    if taken is not None and a.view is not None and taken.agency and taken.agency != a.agency:
        return Action.CONFLICT  # an event is (agency, event id)
    kept = None if taken is None else Kept(taken.version, taken.content_hash, taken.retracted)
    return merge(kept, version=a.version, content_hash=fingerprint, retraction=a.retraction)


@dataclass
class Plan:
    """One batch's changes to ``applied_events`` and what they imply for the fiches."""

    rows: dict[str, dict[str, Any]] = field(default_factory=dict)  # event id -> row
    inserts: set[str] = field(default_factory=set)  # of ``rows``: no stored row before
    fresh: list[tuple[Arrival, AccessMode]] = field(default_factory=list)  # first versions
    touched: set[str] = field(default_factory=set)  # subjects to rebuild
    removing: set[str] = field(default_factory=set)  # of ``touched``: OCAM removed them
    audits: list[dict[str, Any]] = field(default_factory=list)

    def take(self, a: Arrival, before: Taken | None, fingerprint: str | None,
             mode: AccessMode) -> Taken:
        """Record that ``a`` replaces what was taken of its event (``before``)."""
        seq = before.seq if before is not None else (a.rec.partition, a.rec.offset)
        if before is None:
            self.inserts.add(a.event_id)
        elif before.subject_id:
            self.touched.add(before.subject_id)
        if a.view is None:
            if before is not None and before.subject_id and a.reason == REMOVED_FROM_DATABASE:
                self.removing.add(before.subject_id)
            agency = before.agency if before is not None else ""
            self.rows[a.event_id] = _marker_row(a, agency, seq)
            return Taken(a.version, None, True, agency, "", seq)
        outcome = APPLIED if mode.feeds else FEED_DENIED
        self.rows[a.event_id] = _event_row(a, fingerprint, outcome, seq)
        if before is None:
            self.fresh.append((a, mode))
        else:
            self.touched.add(a.subject_id)
        for reason, detail in governance_audits(a.view, mode):
            self.audits.append(
                {"event_id": a.event_id, "version": a.version, "reason": reason,
                 "agency": a.agency, "subject_id": a.subject_id, "detail": detail,
                 "at": a.view["published_at"]})
        return Taken(a.version, fingerprint, False, a.agency, a.subject_id, seq)

    def fast(self) -> list[tuple[Arrival, AccessMode]]:
        """The first versions whose subject is not rebuilt: applied as they come."""
        return [(a, m) for a, m in self.fresh if a.subject_id not in self.touched]


def _event_row(a: Arrival, fingerprint: str | None, outcome: str,
               seq: tuple[int | None, int | None]) -> dict[str, Any]:
    return {
        "event_id": a.event_id, "delivery_id": a.delivery_id, "agency": a.agency,
        "subject_id": a.subject_id, "outcome": outcome, "content_hash": fingerprint,
        "version": a.version, "topic_partition": seq[0], "topic_offset": seq[1],
        # a refused feed is not kept: only what the database applied
        "view": a.payload if outcome == APPLIED else None,
        "retracted_at": None, "retraction_reason": None,
    }


def _marker_row(a: Arrival, agency: str, seq: tuple[int | None, int | None]) -> dict[str, Any]:
    return {
        "event_id": a.event_id, "delivery_id": a.delivery_id, "agency": agency,
        "subject_id": "", "outcome": RETRACTED, "content_hash": None, "version": a.version,
        "topic_partition": seq[0], "topic_offset": seq[1], "view": None,
        "retracted_at": a.retracted_at, "retraction_reason": a.reason,
    }
