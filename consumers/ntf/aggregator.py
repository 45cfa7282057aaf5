"""The National Taskforce aggregator: NtfFacts in, one protected table per closed month out.

A store-backed consumer (:mod:`consumers.tracked`) of ``<p>.internal.ntf-facts``, on a store
of its own (``ntf.db``). Each batch, in one transaction with its input offsets:

- every fact is taken by its event id exactly: an id already taken with the same content is a
  duplicate (skipped, counted), with other content an ``event_id_conflict`` dead letter. The
  content is the month, the arrondissement and the phenomena, not the policy version, so that
  replaying the history under another policy counts nothing twice;
- the counts per (month, arrondissement, phenomenon) grow by the new facts (``ntf_counts``).

**Publication.** The NTF meets monthly and sees closed months only: a month is closed once
its end plus a grace period (default 3 days) has passed on the aggregator's clock. Whenever the
aggregator has caught up with its input (after a batch that reached the end of every
partition, and every ``interval`` seconds when idle), each closed month not yet published is
protected (:mod:`consumers.ntf.suppression`) and its table written, in one transaction, to
``ntf_published``, ``ntf_months`` and the outbox, which sends it to ``<p>.deliver.ntf`` with
deterministic ids (month and entry): a restart never publishes twice.

**A published month is final.** A fact that arrives for it later is counted in the store and
marked ``late`` (metric ``outcome="late"``), but the table is not revised: two versions of a
table differ by the late reports alone, so a revision would single them out, and would show
the earlier values of cells that the new table withholds.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from aiokafka import ConsumerRecord
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from consumers.metrics import StoreMetrics
from consumers.ntf.months import NONE, content, fact_error, is_closed
from consumers.ntf.suppression import Table, protect
from consumers.outbox import NTF_KIND, Outbox, outbox_row
from consumers.store import Database
from consumers.store.tables import ntf_counts, ntf_events, ntf_months, ntf_published
from consumers.store.tables import outbox as outbox_table
from consumers.tracked import TrackedConsumer
from planr.errors import PlanrError
from planr.identity import content_fingerprint
from planr.kafka import KafkaConnection
from planr.loop import Batch
from planr.signing import KeyRegistry
from planr.topics import Topics
from schemas.codec import Codec
from schemas.names import NTF_AGGREGATE, NTF_FACT

log = structlog.get_logger(__name__)

AGGREGATOR = "ntf-aggregator"
#: Namespace of the ids of published entries: uuid5 of ``period|arrondissement|phenomenon``.
CELL_NS = uuid.UUID("5f1c2b9e-8f0d-4a7e-b7a4-3c9d0e6f2a81")
DEFAULT_GRACE = timedelta(days=3)


def cell_id(period: str, arrondissement: str, phenomenon: str) -> str:
    return str(uuid.uuid5(CELL_NS, f"{period}|{arrondissement}|{phenomenon}"))


def _utcnow() -> datetime:
    return datetime.now(UTC)


class NtfAggregator(TrackedConsumer):
    """Count ``<p>.internal.ntf-facts`` into the NTF store; publish closed months."""

    def __init__(
        self,
        *,
        conn: KafkaConnection,
        db: Database,
        topics: Topics,
        codec: Codec,
        metrics: StoreMetrics,
        registry: KeyRegistry,
        threshold: int,
        policy_version: str,
        grace: timedelta = DEFAULT_GRACE,
        now: Callable[[], datetime] = _utcnow,
        interval: float = 60.0,
        outbox: Outbox | None = None,
        max_batch: int = 2000,
    ) -> None:
        super().__init__(name=AGGREGATOR, conn=conn, db=db, codec=codec, metrics=metrics,
                         topics=[topics.ntf_facts], registry=registry, outbox=outbox,
                         max_batch=max_batch)
        if threshold < 2:
            raise ValueError("the NTF threshold must be at least 2")
        self.threshold = threshold
        self.policy_version = policy_version
        self._grace = grace
        self._now = now
        self._interval = interval
        self._checked_at = time.monotonic()
        self.facts = 0
        self.published: list[str] = []

    # ---- counting ---------------------------------------------------------------------------

    def _decode(
        self, batch: Batch, dead: list[dict[str, Any]]
    ) -> list[tuple[ConsumerRecord, dict[str, Any]]]:
        out = []
        for records in batch.values():
            for rec in records:
                try:
                    fact = self._codec.decode(rec.value, NTF_FACT)
                except PlanrError as exc:
                    self.dead_letter(dead, rec, exc.reason, str(exc))
                    continue
                wrong = fact_error(fact)
                if wrong is not None:
                    self.dead_letter(dead, rec, "invalid_fact", f"NtfFact field {wrong}")
                    continue
                said = content(fact)
                out.append((rec, {"event_id": fact["event_id"], **said,
                                  "content_hash": content_fingerprint(said)}))
        return out

    async def handle(self, conn: AsyncConnection, batch: Batch) -> None:
        dead: list[dict[str, Any]] = []
        arrivals = self._decode(batch, dead)
        stored: dict[str, str | None] = await self._db.lookup(
            conn, ntf_events.c.event_id, ntf_events.c.content_hash,
            [row["event_id"] for _, row in arrivals])
        closed = set((await conn.execute(select(ntf_months.c.period))).scalars())
        fresh: list[dict[str, Any]] = []
        added: Counter[tuple[str, str, str]] = Counter()
        for rec, row in arrivals:
            eid = row["event_id"]
            if eid in stored:
                self._repeated(dead, rec, stored[eid], row["content_hash"])
                continue
            stored[eid] = row["content_hash"]
            late = row["period"] in closed
            fresh.append({"event_id": eid, "period": row["period"],
                          "arrondissement": row["arrondissement"],
                          "phenomena": ",".join(row["phenomena"]),
                          "content_hash": row["content_hash"], "late": late})
            for ph in row["phenomena"] or [NONE]:
                added[(row["period"], row["arrondissement"], ph)] += 1
            self._metrics.ntf_facts.labels("late" if late else "counted").inc()
        if fresh:
            await self._db.bulk(ntf_events).execute_async(conn, fresh)
            await self._add_counts(conn, added)
            self.facts += len(fresh)
        if dead:
            await conn.execute(self._db.insert_ignore(outbox_table), dead)

    async def _add_counts(self, conn: AsyncConnection, added: Counter[tuple[str, str, str]]
                          ) -> None:
        periods = sorted({p for p, _, _ in added})
        rows = await conn.execute(
            select(ntf_counts).where(ntf_counts.c.period.in_(periods)))
        totals: Counter[tuple[str, str, str]] = Counter(
            {(r["period"], r["arrondissement"], r["phenomenon"]): r["count"]
             for r in rows.mappings()})
        totals.update(added)
        upsert = self._db.bulk(ntf_counts, upsert=["period", "arrondissement", "phenomenon"])
        await upsert.execute_async(conn, [
            {"period": p, "arrondissement": a, "phenomenon": ph, "count": totals[(p, a, ph)]}
            for p, a, ph in sorted(added)
        ])

    # ---- publication ------------------------------------------------------------------------

    async def _caught_up(self) -> bool:
        """Whether every partition has been read to its end (the fetch's high watermark)."""
        if self._consumer is None or not self._tps:
            return False
        for tp in self._tps:
            high = self._consumer.highwater(tp)
            if high is None or await self._consumer.position(tp) < high:
                return False
        return True

    async def after_commit(self) -> None:
        if await self._caught_up():
            await self.publish_closed()
        await super().after_commit()

    async def _tick(self) -> None:
        if time.monotonic() - self._checked_at >= self._interval:
            self._checked_at = time.monotonic()
            await self.after_commit()

    async def publish_closed(self, now: datetime | None = None) -> list[str]:
        """Protect and publish (through the outbox) every closed month not yet published;
        returns those months. The outbox is sent by :meth:`after_commit`."""
        at = now or self._now()
        tables: dict[str, Table] = {}
        async with self._db.transaction() as conn:
            done = set((await conn.execute(select(ntf_months.c.period))).scalars())
            known = (await conn.execute(select(ntf_counts.c.period).distinct())).scalars()
            for period in sorted(p for p in known if p not in done):
                if not is_closed(period, at, self._grace):
                    continue
                rows = await conn.execute(
                    select(ntf_counts).where(ntf_counts.c.period == period))
                counts = {(r["arrondissement"], r["phenomenon"]): r["count"]
                          for r in rows.mappings()}
                tables[period] = protect(counts, self.threshold)
                await self._write_month(conn, period, tables[period], at)
        for period, table in tables.items():
            self._metrics.ntf_months.labels("withheld" if table.withheld else "published").inc()
            for cell in table.cells:
                self._metrics.ntf_cells.labels(cell.status.value).inc()
            log.info("ntf.month_published", period=period, cells=len(table.cells),
                     withheld=table.withheld)
        self.published.extend(tables)
        return list(tables)

    async def _write_month(self, conn: AsyncConnection, period: str, table: Table,
                           at: datetime) -> None:
        await conn.execute(ntf_months.insert(), {
            "period": period, "state": "withheld" if table.withheld else "published",
            "threshold": self.threshold, "policy_version": self.policy_version,
            "cells": len(table.cells), "published_at": at,
        })
        if table.withheld:
            return
        shown, messages = [], []
        for cell in table.cells:
            aid = cell_id(period, cell.arrondissement, cell.phenomenon)
            record = {
                "aggregate_id": aid, "period": period, "arrondissement": cell.arrondissement,
                "phenomenon": cell.phenomenon,
                "count": None if cell.suppressed else cell.count,
                "shown": cell.shown(self.threshold), "suppressed": cell.suppressed,
                "threshold": self.threshold, "policy_version": self.policy_version,
                "emitted_at": at,
            }
            shown.append({k: record[k] for k in ("period", "arrondissement", "phenomenon",
                                                 "aggregate_id", "shown", "suppressed")})
            messages.append(outbox_row(aid, NTF_KIND, f"{period}|{cell.arrondissement}",
                                       self._codec.encode(NTF_AGGREGATE, record), at))
        await conn.execute(ntf_published.insert(), shown)
        await conn.execute(self._db.insert_ignore(outbox_table), messages)
