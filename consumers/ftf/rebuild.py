"""Rebuilding fiches: when an event is corrected or retracted, its subject's fiche is folded
again from the events it still has, in the order they first arrived.

The fold uses the same rules as the fast path (:func:`consumers.ftf.fiche.apply`) over the
views kept in ``applied_events`` (outcome ``applied``): the access decision taken when a
version arrived is kept, never re-judged under a later access file. A subject left without any
applied event has no fiche and no contribution any more: nothing of the retracted content
remains in the common database.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncConnection

from consumers.ftf.events import APPLIED
from consumers.ftf.fiche import REMOVED, Fiche, apply
from consumers.ftf.governance import AccessMode
from consumers.store import Database
from consumers.store.db import chunks_in
from consumers.store.tables import applied_events, contributions, fiches
from planr.errors import PlanrError
from schemas.codec import Codec
from schemas.names import view_schema_name

FTF_VIEW = view_schema_name("ftf_db")
_CHUNK = 500


class ReprojectionNeededError(PlanrError):
    """A fiche to rebuild has events stored before their views were kept (revision 0004p)."""

    reason = "needs_reprojection"


@dataclass
class Rebuilt:
    """The fiches of the rebuilt subjects (``None``: no fiche any more), their contributions,
    and the removals their folds decide (deterministic ids: already-sent ones are ignored)."""

    fiches: dict[str, Fiche | None] = field(default_factory=dict)
    contributions: list[dict[str, Any]] = field(default_factory=list)
    removals: list[dict[str, Any]] = field(default_factory=list)


async def load_fiches(conn: AsyncConnection, subject_ids: Iterable[str]) -> dict[str, Fiche]:
    out: dict[str, Fiche] = {}
    for where in chunks_in(conn.dialect.name, fiches.c.subject_id, subject_ids):
        rows = await conn.execute(select(fiches).where(where))
        for r in rows.mappings():
            out[r["subject_id"]] = Fiche.from_row(r)
    return out


async def rebuild(conn: AsyncConnection, db: Database, codec: Codec, subjects: Iterable[str],
                  *, keep_removed: Iterable[str] = ()) -> Rebuilt:
    """Fold the fiches of ``subjects`` again from ``applied_events`` (as written in this
    transaction) and replace their fiches and contributions.

    ``keep_removed``: subjects whose events are being retracted because OCAM removed them
    (``removed_from_database``). The router retracts their events one by one, in no particular
    order, possibly across batches: a fiche stored as ``removed`` stays removed while some of
    them remain (taking back OCAM's removing event first must not make it included again), and
    goes with the last one."""
    wanted = sorted(set(subjects))
    removed = {s: f for s, f in (await load_fiches(conn, keep_removed)).items()
               if f.state == REMOVED}
    out = Rebuilt(fiches=dict.fromkeys(wanted))
    for i in range(0, len(wanted), _CHUNK):
        await _fold(conn, codec, wanted[i : i + _CHUNK], out)
    for subject, before in removed.items():
        after = out.fiches.get(subject)
        if after is not None and after.state != REMOVED:
            after.state, after.removed_at = REMOVED, before.removed_at
            after.threat_level = after.review_due = None
    for i in range(0, len(wanted), _CHUNK):
        chunk = wanted[i : i + _CHUNK]
        await conn.execute(delete(contributions).where(contributions.c.subject_id.in_(chunk)))
        await conn.execute(delete(fiches).where(fiches.c.subject_id.in_(chunk)))
    if out.contributions:
        # upsert: a contribution row of the event under another subject is replaced too
        await conn.execute(db.upsert(contributions, ["event_id"]), out.contributions)
    kept = [f.row() for f in out.fiches.values() if f is not None]
    if kept:
        await conn.execute(fiches.insert(), kept)
    return out


async def _fold(conn: AsyncConnection, codec: Codec, subjects: list[str], out: Rebuilt) -> None:
    t = applied_events
    rows = await conn.execute(
        select(t.c.event_id, t.c.subject_id, t.c.view)
        .where(t.c.subject_id.in_(subjects), t.c.outcome == APPLIED)
        .order_by(t.c.topic_partition, t.c.topic_offset))
    for event_id, subject_id, view in rows:
        if view is None:
            raise ReprojectionNeededError(
                f"event {event_id} of subject {subject_id} was stored before the projector "
                "kept views (revision 0004p): re-project the common database from its topic")
        result = apply(out.fiches[subject_id], codec.decode(view, FTF_VIEW),
                       AccessMode.CONSULT_AND_FEED)
        out.fiches[subject_id] = result.fiche
        if result.contribution is not None:
            out.contributions.append(result.contribution)
        if result.removal is not None:
            out.removals.append(result.removal)
