"""Read-side queries of the common database that are not consultations: overdue reviews, the
domain gauges and the logs kept for the oversight bodies. They run on any store (SQLite or
PostgreSQL)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, literal_column, select, union_all

from consumers.ftf.consult import OPEN
from consumers.ftf.fiche import INCLUDED, PROPOSED, REMOVED, Fiche
from consumers.metrics import StoreMetrics
from consumers.store import Database
from consumers.store.tables import consultations, fiches, governance_audit, ocam_requests

#: The gauges' label values: the fiche states, and what waits for OCAM (``pending``).
FICHE_STATES = (PROPOSED, INCLUDED, REMOVED)
PENDING_FICHE, PENDING_REQUEST = "fiche", "request"


async def count_overdue(db: Database, now: datetime) -> int:
    """How many included entries based on serious indications are past their review date."""
    async with db.engine.connect() as conn:
        n = await conn.scalar(
            select(func.count()).select_from(fiches)
            .where(fiches.c.state == INCLUDED, fiches.c.review_due < now)
        )
    return int(n or 0)


async def domain_counts(db: Database) -> dict[str, dict[str, int]]:
    """Fiches by state and open OCAM requests, in one aggregate query (labels and counts)."""
    f, r = fiches.c, ocam_requests.c
    query = union_all(
        select(literal_column("'fiche'").label("what"), f.state.label("value"),
               func.count().label("n")).group_by(f.state),
        select(literal_column("'request'"), r.status, func.count())
        .where(r.status == OPEN).group_by(r.status),
    )
    out: dict[str, dict[str, int]] = {"fiche": {}, "request": {}}
    async with db.engine.connect() as conn:
        for what, value, n in (await conn.execute(query)).all():
            out[what][value] = int(n)
    return out


async def refresh_gauges(db: Database, metrics: StoreMetrics) -> None:
    """Set the fiche and OCAM gauges from :func:`domain_counts` (every state, 0 included)."""
    counts = await domain_counts(db)
    for state in FICHE_STATES:
        metrics.ftf_fiches.labels(state).set(counts["fiche"].get(state, 0))
    metrics.ftf_ocam_pending.labels(PENDING_FICHE).set(counts["fiche"].get(PROPOSED, 0))
    metrics.ftf_ocam_pending.labels(PENDING_REQUEST).set(counts["request"].get(OPEN, 0))


async def overdue(db: Database, now: datetime) -> list[Fiche]:
    """Included entries based on serious indications whose review date has passed."""
    async with db.engine.connect() as conn:
        rows = await conn.execute(
            select(fiches).where(fiches.c.state == INCLUDED, fiches.c.review_due < now)
            .order_by(fiches.c.review_due, fiches.c.subject_id)
        )
        return [Fiche.from_row(r) for r in rows.mappings()]


async def consultation_log(db: Database, limit: int | None = None) -> list[dict[str, Any]]:
    """The consultation log, oldest first."""
    query = select(consultations).order_by(consultations.c.consulted_at,
                                           consultations.c.consultation_id)
    if limit is not None:
        query = query.limit(limit)
    async with db.engine.connect() as conn:
        return [dict(r) for r in (await conn.execute(query)).mappings()]


async def governance_log(db: Database) -> list[dict[str, Any]]:
    """The projector's governance audit (ignored OCAM fields, denied feeds...), oldest first."""
    t = governance_audit
    async with db.engine.connect() as conn:
        rows = await conn.execute(t.select().order_by(t.c.at, t.c.event_id, t.c.reason))
        return [dict(r) for r in rows.mappings()]
