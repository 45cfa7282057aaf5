"""The common-database (FTF / T.E.R.) projector: the ``ftf-db`` delivery topic in, fiches out.

Effectively-once: each batch's fiche changes, contributions, governance audit records,
outbox messages and next input offsets are written in one database transaction; an event id
already applied is skipped. See :mod:`consumers.tracked` for the offset handling and
:mod:`consumers.ftf.fiche` for the rules.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import structlog
from aiokafka import ConsumerRecord
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from consumers.ftf.fiche import Fiche, apply
from consumers.ftf.governance import AccessConfig
from consumers.ftf.queries import count_overdue
from consumers.metrics import StoreMetrics
from consumers.outbox import REMOVAL_KIND, Outbox, outbox_row
from consumers.store import Database
from consumers.store.tables import (
    applied_events,
    contributions,
    fiches,
    governance_audit,
)
from consumers.store.tables import (
    outbox as outbox_table,
)
from consumers.tracked import TrackedConsumer
from planr.domain import Recipient, RecipientClass
from planr.errors import PlanrError
from planr.identity import content_fingerprint
from planr.kafka import KafkaConnection
from planr.loop import Batch
from planr.signing import KeyRegistry
from planr.topics import Topics
from schemas.codec import Codec
from schemas.names import DELIVERY, FTF_REMOVAL, view_schema_name

log = structlog.get_logger(__name__)

PROJECTOR = "ftf-projector"
FTF_VIEW = view_schema_name("ftf_db")
_CHUNK = 500


async def load_fiches(conn: AsyncConnection, subject_ids: Iterable[str]) -> dict[str, Fiche]:
    wanted = sorted(set(subject_ids))
    out: dict[str, Fiche] = {}
    for i in range(0, len(wanted), _CHUNK):
        rows = await conn.execute(
            select(fiches).where(fiches.c.subject_id.in_(wanted[i : i + _CHUNK]))
        )
        for r in rows.mappings():
            out[r["subject_id"]] = Fiche.from_row(r)
    return out


class Projector(TrackedConsumer):
    """Consume ``<p>.deliver.ftf-db`` into the store. ``start()``/``stop()`` or ``async with``.

    Only deliveries signed by a ``router`` key of ``registry`` are applied (see
    :mod:`consumers.tracked`); the outbox signs what it sends with its own signer.
    """

    def __init__(
        self,
        *,
        conn: KafkaConnection,
        db: Database,
        topics: Topics,
        codec: Codec,
        access: AccessConfig,
        metrics: StoreMetrics,
        registry: KeyRegistry,
        outbox: Outbox | None = None,
        max_batch: int = 2000,
        gauge_interval: float = 5.0,
    ) -> None:
        super().__init__(name=PROJECTOR, conn=conn, db=db, codec=codec, metrics=metrics,
                         topics=[topics.delivery(Recipient(RecipientClass.FTF_DB))],
                         registry=registry, outbox=outbox, max_batch=max_batch)
        self._access = access
        self._gauge_interval = gauge_interval
        self._gauge_at = 0.0
        self.removals = 0

    async def after_commit(self) -> None:
        await super().after_commit()
        now = time.monotonic()
        if now - self._gauge_at >= self._gauge_interval:
            self._gauge_at = now
            self._metrics.ftf_overdue.set(await count_overdue(self._db, datetime.now(UTC)))

    def _decode(
        self, batch: Batch, dead: list[dict[str, Any]]
    ) -> list[tuple[ConsumerRecord, dict[str, Any], dict[str, Any]]]:
        items = []
        for records in batch.values():
            for rec in records:
                try:
                    envelope = self._codec.decode(rec.value, DELIVERY)
                    if envelope["recipient"] != RecipientClass.FTF_DB.value:
                        self.dead_letter(dead, rec, "recipient_mismatch",
                                         "delivery addressed to another recipient")
                        continue
                    view = self._codec.decode(envelope["payload"], FTF_VIEW)
                except PlanrError as exc:
                    self.dead_letter(dead, rec, exc.reason, str(exc))
                    continue
                items.append((rec, envelope, view))
        return items

    async def handle(self, conn: AsyncConnection, batch: Batch) -> None:
        db = self._db
        out_rows: list[dict[str, Any]] = []
        items = self._decode(batch, out_rows)
        seen: dict[str, str | None] = await db.lookup(
            conn, applied_events.c.event_id, applied_events.c.content_hash,
            [v["event_id"] for _, _, v in items])
        state = await load_fiches(
            conn, (v["subject"]["id"] for _, _, v in items if v["event_id"] not in seen)
        )
        changed: set[str] = set()
        applied: list[dict[str, Any]] = []
        contrib: list[dict[str, Any]] = []
        audits: list[dict[str, Any]] = []
        for rec, envelope, view in items:
            eid, sid, agency = view["event_id"], view["subject"]["id"], view["agency"]
            fingerprint = content_fingerprint(view)
            if eid in seen:
                self._repeated(out_rows, rec, seen[eid], fingerprint)
                continue
            seen[eid] = fingerprint
            result = apply(state.get(sid), view, self._access.mode(agency))
            applied.append({"event_id": eid, "delivery_id": envelope["delivery_id"],
                            "agency": agency, "subject_id": sid, "outcome": result.outcome,
                            "content_hash": fingerprint})
            self._metrics.ftf_events.labels(agency, result.outcome).inc()
            for reason, detail in result.audits:
                audits.append({"event_id": eid, "reason": reason, "agency": agency,
                               "subject_id": sid, "detail": detail,
                               "at": view["published_at"]})
                self._metrics.ftf_governance.labels(reason).inc()
            if result.contribution is not None and result.fiche is not None:
                contrib.append(result.contribution)
                state[sid] = result.fiche
                changed.add(sid)
            if result.removal is not None:
                out_rows.append(outbox_row(
                    result.removal["removal_id"], REMOVAL_KIND, sid,
                    self._codec.encode(FTF_REMOVAL, result.removal),
                    result.removal["removed_at"],
                ))
                self.removals += 1
                self._metrics.ftf_removals.inc()
        if applied:
            await conn.execute(applied_events.insert(), applied)
        if contrib:
            await conn.execute(db.insert_ignore(contributions), contrib)
        if audits:
            await conn.execute(db.insert_ignore(governance_audit), audits)
        if changed:
            await conn.execute(db.upsert(fiches, ["subject_id"]),
                               [state[s].row() for s in sorted(changed)])
        if out_rows:
            await conn.execute(db.insert_ignore(outbox_table), out_rows)
