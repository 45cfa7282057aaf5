"""Read-side queries of the common database that are not consultations: overdue reviews and
the logs kept for the oversight bodies. They run on any store (SQLite or PostgreSQL)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from consumers.ftf.fiche import INCLUDED, Fiche
from consumers.store import Database
from consumers.store.tables import consultations, fiches, governance_audit


async def count_overdue(db: Database, now: datetime) -> int:
    """How many included entries based on serious indications are past their review date."""
    async with db.engine.connect() as conn:
        n = await conn.scalar(
            select(func.count()).select_from(fiches)
            .where(fiches.c.state == INCLUDED, fiches.c.review_due < now)
        )
    return int(n or 0)


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
