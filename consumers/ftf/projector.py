"""The common-database (FTF / T.E.R.) projector: the ``ftf-db`` delivery topic in, fiches out.

The topic carries ``Delivery`` records (the ``ftf_db`` view of one version of an event; the
delivery id is the same for every version) and ``Retraction`` records (``withdrawn``,
``not_entitled``, ``removed_from_database``), told apart by their writer schema.

**A signal's life.** ``applied_events`` keeps one row per event: its latest version, or a
retraction marker with no content (:mod:`consumers.ftf.events`; the inboxes' version rules).
Versions apply in order whatever order they arrive in; a replay or an older version is
skipped and counted; the same version with other content, or the event id from another
agency, is dead-lettered (``event_id_conflict``). A fiche is the fold of its subject's applied
events in the order each event *first* arrived (a correction takes its event's place):

- **fast path**: the first version of an event whose subject nothing else touches in the batch
  is applied to the stored fiche as it comes (:func:`consumers.ftf.fiche.apply`);
- **rebuild**: a subject one of whose events was corrected or retracted (both subjects when a
  correction moves an event to another subject) gets its fiche and contributions folded again
  from its remaining events (:mod:`consumers.ftf.rebuild`). A subject with no applied event
  left has no fiche and no contribution: no trace of withdrawn content remains.

The governance audit records the decisions taken on each version as it arrived (key: event
id, version, reason); they depend on that version alone, so a rebuild neither repeats nor
changes them, and a retraction does not erase them (ids and labels only: what a service
attempted stays visible to the oversight bodies). Removals have deterministic ids (of the
deciding event): a rebuild that decides a removal already in the outbox sends nothing again.

Effectively-once: each batch's event rows, fiche changes, contributions, governance audit
records, outbox messages and next input offsets are written in one database transaction. See
:mod:`consumers.tracked` for the offset handling and :mod:`consumers.ftf.fiche` for the rules.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from aiokafka import ConsumerRecord
from sqlalchemy.ext.asyncio import AsyncConnection

from consumers.ftf.events import (
    APPLIED,
    FEED_DENIED,
    RETRACTED,
    Arrival,
    Plan,
    Taken,
    judge,
    load_taken,
)
from consumers.ftf.fiche import apply
from consumers.ftf.governance import AccessConfig, AccessMode
from consumers.ftf.queries import count_overdue, refresh_gauges
from consumers.ftf.rebuild import FTF_VIEW, load_fiches, rebuild
from consumers.inbox_rows import Action
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
from consumers.tracked import PREPARE_SLICE, TrackedConsumer
from planr.domain import Recipient, RecipientClass
from planr.identity import CONFLICT, content_fingerprint
from planr.kafka import KafkaConnection
from planr.signing import KeyRegistry
from planr.topics import Topics
from schemas.codec import Codec
from schemas.names import DELIVERY, FTF_REMOVAL, RETRACTION

log = structlog.get_logger(__name__)

__all__ = ["PROJECTOR", "Projector", "load_fiches"]

PROJECTOR = "ftf-projector"


#: A record of the ``ftf-db`` topic decoded, before it meets its ConsumerRecord again: its
#: recipient, then for a delivery what the projector keeps of the envelope (delivery id,
#: version, payload), the view and the view's content fingerprint; for a retraction, the
#: retraction record, ``None``, ``None``. (Plain tuples and dicts: they cross from the checking
#: process at about half the cost of a named tuple holding the whole envelope.)
Decoded = tuple[str, dict[str, Any], dict[str, Any] | None, str | None]


def arrival_of(rec: ConsumerRecord, decoded: Decoded) -> Arrival:
    _, record, view, fingerprint = decoded
    if view is None:
        return Arrival.retraction_of(rec, record)
    return Arrival.delivery(rec, record, view, fingerprint)


@dataclass(frozen=True)
class DecodeArrival:
    """Decodes one record of the ``ftf-db`` topic by its writer schema (the projector's
    :meth:`~consumers.tracked.TrackedConsumer.decoder`; it may run in the checking process)."""

    codec: Codec

    def __call__(self, topic: str, value: bytes) -> Decoded:  # noqa: ARG002 - one topic
        codec = self.codec
        if codec.writer_of(value).name == RETRACTION:
            r = codec.decode(value, RETRACTION)
            return r["recipient"], r, None, None
        env = codec.decode(value, DELIVERY)
        view = codec.decode(env["payload"], FTF_VIEW)
        kept = {"delivery_id": env["delivery_id"], "version": env["version"],
                "payload": env["payload"]}
        return env["recipient"], kept, view, content_fingerprint(view)


class Projector(TrackedConsumer):
    """Consume ``<p>.deliver.ftf-db`` into the store. ``start()``/``stop()`` or ``async with``.

    Only records signed by a ``router`` key of ``registry`` are applied (see
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
        check_process: bool = False,
    ) -> None:
        super().__init__(name=PROJECTOR, conn=conn, db=db, codec=codec, metrics=metrics,
                         topics=[topics.delivery(Recipient(RecipientClass.FTF_DB))],
                         registry=registry, outbox=outbox, max_batch=max_batch,
                         check_process=check_process)
        self._access = access
        self._gauge_interval = gauge_interval
        self._gauge_at = 0.0
        self.removals = 0
        self.rebuilds = 0  # subjects whose fiche was folded again

    async def after_commit(self) -> None:
        await super().after_commit()
        now = time.monotonic()
        if now - self._gauge_at >= self._gauge_interval:
            self._gauge_at = now
            self._metrics.ftf_overdue.set(await count_overdue(self._db, datetime.now(UTC)))
            await refresh_gauges(self._db, self._metrics)

    def decoder(self) -> DecodeArrival:
        return DecodeArrival(self._codec)

    async def prepare(self, checked: list[tuple[ConsumerRecord, Any]],
                      dead: list[dict[str, Any]]) -> list[Arrival]:
        """The deliveries and retractions addressed to the common database, as arrivals;
        anything else is dead-lettered."""
        items = []
        for i, (rec, decoded) in enumerate(checked, 1):
            if decoded[0] != RecipientClass.FTF_DB.value:
                self.dead_letter(dead, rec, "recipient_mismatch",
                                 "delivery addressed to another recipient")
                continue
            items.append(arrival_of(rec, decoded))
            if i % PREPARE_SLICE == 0:
                await asyncio.sleep(0)  # let the write in progress go on
        return items

    async def handle(self, conn: AsyncConnection, arrivals: list[Arrival]) -> None:
        db = self._db
        out_rows: list[dict[str, Any]] = []
        plan = self._plan(arrivals, await load_taken(conn, [a.event_id for a in arrivals]),
                          out_rows)
        inserts = [r for e, r in plan.rows.items() if e in plan.inserts]
        updates = [r for e, r in plan.rows.items() if e not in plan.inserts]
        if inserts:
            await db.bulk(applied_events).execute_async(conn, inserts)
        if updates:
            await db.bulk(applied_events, upsert=["event_id"]).execute_async(conn, updates)
        await self._apply_fresh(conn, plan.fast(), out_rows)
        if plan.touched:
            await self._rebuild(conn, plan, out_rows)
        if plan.audits:
            await conn.execute(db.insert_ignore(governance_audit), plan.audits)
            for reason, n in Counter(a["reason"] for a in plan.audits).items():
                self._metrics.ftf_governance.labels(reason).inc(n)
        if out_rows:
            await conn.execute(db.insert_ignore(outbox_table), out_rows)

    def _plan(self, arrivals: list[Arrival], taken: dict[str, Taken],
              dead: list[dict[str, Any]]) -> Plan:
        """Judge each arrival in order against what was taken of its event (and what this
        batch took before it). Metrics are counted per batch, not per arrival."""
        plan = Plan()
        modes: dict[str, AccessMode] = {}  # by agency: one lookup per batch
        outcomes: Counter[tuple[str, str]] = Counter()
        duplicates = 0
        for a in arrivals:
            before = taken.get(a.event_id)
            fingerprint = a.fingerprint
            action = judge(before, a, fingerprint)
            if action is Action.CONFLICT:
                self.dead_letter(dead, a.rec, CONFLICT, "id already stored with other content")
                continue
            if action is not Action.STORE:  # a replay, or an older version arriving late
                duplicates += 1
                continue
            mode = AccessMode.NONE if a.view is None else modes.get(a.agency)
            if mode is None:
                mode = modes[a.agency] = self._access.mode(a.agency)
            now = taken[a.event_id] = plan.take(a, before, fingerprint, mode)
            outcome = RETRACTED if a.retraction else (APPLIED if mode.feeds else FEED_DENIED)
            outcomes[now.agency or "unknown", outcome] += 1
        if duplicates:
            self.stats.duplicates += duplicates
            self._metrics.duplicates.labels(self.name).inc(duplicates)
        for labels, n in outcomes.items():
            self._metrics.ftf_events.labels(*labels).inc(n)
        return plan

    async def _apply_fresh(self, conn: AsyncConnection, fresh: list[tuple[Arrival, AccessMode]],
                           out_rows: list[dict[str, Any]]) -> None:
        """The fast path: first versions of events, applied to their fiche as they come."""
        state = await load_fiches(conn, (a.subject_id for a, _ in fresh))
        changed: set[str] = set()
        contrib: list[dict[str, Any]] = []
        for a, mode in fresh:
            assert a.view is not None  # fresh arrivals are deliveries
            result = apply(state.get(a.subject_id), a.view, mode)
            if result.contribution is not None and result.fiche is not None:
                contrib.append(result.contribution)
                state[a.subject_id] = result.fiche
                changed.add(a.subject_id)
            if result.removal is not None:
                self._removal(out_rows, result.removal)
        if contrib:
            await self._db.bulk(contributions, ignore=True).execute_async(conn, contrib)
        if changed:
            await self._db.bulk(fiches, upsert=["subject_id"]).execute_async(
                conn, [state[s].row() for s in sorted(changed)])

    async def _rebuild(self, conn: AsyncConnection, plan: Plan,
                       out_rows: list[dict[str, Any]]) -> None:
        """The subjects whose events changed otherwise: their fiches folded again."""
        done = await rebuild(conn, self._db, self._codec, plan.touched,
                             keep_removed=plan.removing)
        self.rebuilds += len(plan.touched)
        sent = await self._db.existing(conn, outbox_table.c.message_id,
                                       [r["removal_id"] for r in done.removals])
        for removal in done.removals:
            if removal["removal_id"] not in sent:
                self._removal(out_rows, removal)

    def _removal(self, out_rows: list[dict[str, Any]], removal: dict[str, Any]) -> None:
        out_rows.append(outbox_row(removal["removal_id"], REMOVAL_KIND, removal["subject_id"],
                                   self._codec.encode(FTF_REMOVAL, removal),
                                   removal["removed_at"]))
        self.removals += 1
        self._metrics.ftf_removals.inc()
