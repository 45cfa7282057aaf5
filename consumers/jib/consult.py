"""Consultation of the JIB: a proposal with its history, the proposals of a party, the
current members.

Who may see what: the participants of a proposal are the services of its panel and its
proposer; a member (an adopted insertion) is visible to the participants of the proposal that
inserted it. Anyone else gets, byte for byte and with the same exit code, the answer for an
unknown proposal or person (no oracle). Every consultation is written to
``jib_consultations`` and, through the outbox, to ``<p>.audit.jib`` (ids and labels only), in
one transaction, before the answer is given.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from consumers.jib.render import render
from consumers.jib.store import proposal_from_row, uncsv
from consumers.jib.tables import jib_consultations, jib_members, jib_proposals, jib_votes
from consumers.metrics import StoreMetrics
from consumers.outbox import JIB_AUDIT_KIND, outbox_row
from consumers.store import Database
from consumers.store.tables import outbox
from schemas.codec import Codec
from schemas.names import JIB_AUDIT

PROPOSAL, PROPOSALS, MEMBERS, UNKNOWN, NO_ACCESS = (
    "proposal", "proposals", "members", "unknown", "no_access")


@dataclass(frozen=True)
class JibAnswer:
    """What a consultation answers. ``answer_class`` is logged; :meth:`render` is shown."""

    consultation_id: str
    verb: str
    target: str | None
    answer_class: str
    items: Sequence[dict[str, Any]] = field(default_factory=tuple)

    def render(self, *, as_json: bool = False) -> tuple[str, int]:
        """(stdout text, exit code). ``no_access`` renders exactly as ``unknown``."""
        shown = UNKNOWN if self.answer_class == NO_ACCESS else self.answer_class
        return render(self.verb, self.target, shown, self.items, as_json=as_json)


def _proposal_view(row: Any, votes: Sequence[Any]) -> dict[str, Any]:
    p = proposal_from_row(row)
    return {
        "proposal_id": p.proposal_id, "proposer": p.proposer,
        "arrondissement": p.arrondissement, "subject_id": p.subject_id, "action": p.action,
        "proposed_at": p.proposed_at, "deadline": p.deadline, "panel": list(p.panel),
        "state": p.outcome or "open", "decided_at": p.decided_at,
        "deciding_vote": p.deciding_vote, "approvals": p.approvals,
        "objections": p.objections, "grounds": row["grounds"],
        "votes": [{"vote_id": v["vote_id"], "service": v["service"], "choice": v["choice"],
                   "cast_at": v["cast_at"], "status": v["status"], "reason": v["reason"]}
                  for v in votes],
    }


def _summary(row: Any) -> dict[str, Any]:
    return {k: row[k] for k in ("proposal_id", "proposer", "arrondissement", "subject_id",
                                "action", "proposed_at", "deadline")} | {
        "state": row["outcome"] or "open", "decided_at": row["decided_at"]}


def _sees(party: str, row: Any) -> bool:
    return party == row["proposer"] or party in uncsv(row["panel"])


class JibConsultations:
    """Answer consultations and log them. Library class: explicit arguments, no settings."""

    def __init__(self, *, db: Database, codec: Codec, metrics: StoreMetrics) -> None:
        self._db = db
        self._codec = codec
        self._metrics = metrics

    async def show(self, party: str, proposal_id: str, now: datetime) -> JibAnswer:
        started = time.perf_counter()
        async with self._db.transaction() as conn:
            row = (await conn.execute(select(jib_proposals).where(
                jib_proposals.c.proposal_id == proposal_id))).mappings().first()
            if row is None:
                answer = JibAnswer(str(uuid.uuid4()), "show", proposal_id, UNKNOWN)
            elif not _sees(party, row):
                answer = JibAnswer(str(uuid.uuid4()), "show", proposal_id, NO_ACCESS)
            else:
                votes = (await conn.execute(select(jib_votes).where(
                    jib_votes.c.proposal_id == proposal_id).order_by(
                    jib_votes.c.topic_offset))).mappings().all()
                answer = JibAnswer(str(uuid.uuid4()), "show", proposal_id, PROPOSAL,
                                   (_proposal_view(row, votes),))
            await self._log(conn, answer, party, "", now,
                            subject=row["subject_id"] if row is not None else None)
        self._observe(answer, started)
        return answer

    async def list(self, party: str, now: datetime, *, state: str | None = None,
                   subject: str | None = None) -> JibAnswer:
        started = time.perf_counter()
        query = ";".join(f"{k}={v}" for k, v in (("state", state), ("subject", subject)) if v)
        t = jib_proposals.c
        stmt = select(jib_proposals).order_by(t.topic_partition, t.topic_offset)
        if subject:
            stmt = stmt.where(t.subject_id == subject)
        if state == "open":
            stmt = stmt.where(t.outcome.is_(None))
        elif state:
            stmt = stmt.where(t.outcome == state)
        async with self._db.transaction() as conn:
            rows = (await conn.execute(stmt)).mappings().all()
            answer = JibAnswer(str(uuid.uuid4()), "list", subject, PROPOSALS,
                               tuple(_summary(r) for r in rows if _sees(party, r)))
            await self._log(conn, answer, party, query, now, subject=subject)
        self._observe(answer, started)
        return answer

    async def members(self, party: str, now: datetime, *, subject: str | None = None
                      ) -> JibAnswer:
        started = time.perf_counter()
        t = jib_members.c
        stmt = select(jib_members).order_by(t.subject_id, t.arrondissement)
        if subject:
            stmt = stmt.where(t.subject_id == subject)
        async with self._db.transaction() as conn:
            rows = (await conn.execute(stmt)).mappings().all()
            visible = tuple(
                {k: r[k] for k in ("subject_id", "arrondissement", "since", "proposal_id")}
                for r in rows if _sees(party, r))
            cls = MEMBERS
            if subject and not visible:
                cls = NO_ACCESS if rows else UNKNOWN
            answer = JibAnswer(str(uuid.uuid4()), "members", subject, cls, visible)
            await self._log(conn, answer, party, f"subject={subject}" if subject else "", now,
                            subject=subject)
        self._observe(answer, started)
        return answer

    def _observe(self, answer: JibAnswer, started: float) -> None:
        """One sample of the consultation time, once its transaction is over."""
        self._metrics.jib_consult_seconds.labels(answer.verb, answer.answer_class).observe(
            time.perf_counter() - started)

    async def _log(self, conn: AsyncConnection, answer: JibAnswer, party: str, query: str,
                   now: datetime, *, subject: str | None) -> None:
        row = {"consultation_id": answer.consultation_id, "consulted_at": now, "party": party,
               "verb": answer.verb, "target": answer.target, "query": query,
               "answer_class": answer.answer_class}
        await conn.execute(jib_consultations.insert(), row)
        audit = {"audit_id": answer.consultation_id, "at": now, "action": "consulted",
                 "party": party, "proposal_id": answer.target if answer.verb == "show" else None,
                 "subject_id": subject, "outcome": answer.answer_class,
                 "detail": f"verb={answer.verb}" + (f";{query}" if query else ""),
                 "rules": [], "policy_version": None}
        await conn.execute(outbox.insert(), [outbox_row(
            answer.consultation_id, JIB_AUDIT_KIND, party, self._codec.encode(JIB_AUDIT, audit),
            now)])
        self._metrics.jib_consultations.labels(answer.verb, answer.answer_class).inc()
