"""Durable inboxes of the TFL, WG and CSIL R recipients.

The inbox service consumes the recipients' delivery topics and stores every delivery in the
database, deduplicated by delivery id, with the input offsets in the same transaction. Only
deliveries signed by a ``router`` key are considered (:mod:`consumers.tracked`), and only
those whose payload decodes with its view schema are stored: anything else is dead-lettered,
so a stored inbox always reads back. The payload is kept as delivered (the view record in
Avro) and decoded again when read, so old deliveries stay readable as the view schemas evolve.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka import ConsumerRecord
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from consumers.inbox_rows import Action, Kept, merge, read_stored
from consumers.metrics import StoreMetrics
from consumers.outbox import Outbox
from consumers.store import Database
from consumers.store.db import chunks_in
from consumers.store.tables import inbox_deliveries, outbox
from consumers.tracked import PREPARE_SLICE, TrackedConsumer
from planr.domain import Recipient, RecipientClass, all_recipients
from planr.errors import PlanrError
from planr.identity import CONFLICT, content_fingerprint
from planr.kafka import KafkaConnection
from planr.signing import KeyRegistry
from planr.topics import Topics
from schemas.codec import Codec
from schemas.names import DELIVERY, RETRACTION, view_schema_name

INBOXES = "inboxes"
INBOX_CLASSES = frozenset({RecipientClass.TFL, RecipientClass.WG, RecipientClass.CSILR})


def inbox_recipients() -> list[Recipient]:
    """Every recipient with a durable inbox: 12 TFL, 12 WG, 565 CSIL R."""
    return [r for r in all_recipients() if r.cls in INBOX_CLASSES]


@dataclass(frozen=True)
class DecodeInboxRow:
    """Decodes one delivery or retraction into its inbox row (without its topic position) and
    whether it is a retraction (the inbox service's
    :meth:`~consumers.tracked.TrackedConsumer.decoder`; it may run in the checking process)."""

    codec: Codec

    def __call__(self, topic: str, value: bytes) -> tuple[dict[str, Any], bool]:  # noqa: ARG002
        if self.codec.writer_of(value).name == RETRACTION:
            r = self.codec.decode(value, RETRACTION)
            return {
                "delivery_id": r["delivery_id"], "recipient": r["recipient"],
                "event_id": r["event_id"], "rule": "", "rules": "",
                "policy_version": r["policy_version"], "routed_at": r["retracted_at"],
                "view": "", "payload": None, "content_hash": None, "version": r["version"],
                "retracted_at": r["retracted_at"], "retraction_reason": r["reason"],
            }, True
        env = self.codec.decode(value, DELIVERY)
        view = self.codec.decode(env["payload"], view_schema_name(env["view"]))
        return {
            "delivery_id": env["delivery_id"], "recipient": env["recipient"],
            "event_id": env["event_id"], "rule": env["rule"],
            "rules": ",".join(env.get("rules") or ()),
            "policy_version": env["policy_version"], "routed_at": env["routed_at"],
            "view": env["view"], "payload": env["payload"],
            "content_hash": content_fingerprint(view), "version": env["version"],
            "retracted_at": None, "retraction_reason": None,
        }, False


class InboxService(TrackedConsumer):
    """Store the deliveries of ``recipients`` (default: every inbox recipient) that are signed
    by a ``router`` key of ``registry``."""

    def __init__(
        self,
        *,
        conn: KafkaConnection,
        db: Database,
        topics: Topics,
        codec: Codec,
        metrics: StoreMetrics,
        registry: KeyRegistry,
        recipients: Iterable[Recipient] | None = None,
        outbox: Outbox | None = None,
        max_batch: int = 2000,
        check_process: bool = False,
    ) -> None:
        chosen = list(recipients) if recipients is not None else inbox_recipients()
        for r in chosen:
            if r.cls not in INBOX_CLASSES:
                raise PlanrError(f"{r} has no durable inbox")
        self._by_topic = {topics.delivery(r): r for r in chosen}
        self._recipient_of = {topic: str(r) for topic, r in self._by_topic.items()}
        super().__init__(name=INBOXES, conn=conn, db=db, codec=codec, metrics=metrics,
                         topics=list(self._by_topic), registry=registry, outbox=outbox,
                         max_batch=max_batch, check_process=check_process)
        self.stored = 0

    def decoder(self) -> DecodeInboxRow:
        return DecodeInboxRow(self._codec)

    async def prepare(self, checked: list[tuple[ConsumerRecord, Any]],
                      dead: list[dict[str, Any]]
                      ) -> list[tuple[ConsumerRecord, dict[str, Any], bool]]:
        """The rows to apply, with whether each is a retraction: decoded (a payload that does
        not decode is dead-lettered, never stored) and addressed to this topic's recipient;
        possibly while the batch before is written (:mod:`consumers.tracked`)."""
        out = []
        for i, (rec, (row, retraction)) in enumerate(checked, 1):
            if i % PREPARE_SLICE == 0:
                await asyncio.sleep(0)  # let the write in progress go on
            if row["recipient"] != self._recipient_of[rec.topic]:
                self.dead_letter(dead, rec, "recipient_mismatch",
                                 "delivery addressed to another recipient")
                continue
            row["topic_partition"], row["topic_offset"] = rec.partition, rec.offset  # its own
            out.append((rec, row, retraction))
        return out

    async def handle(self, conn: AsyncConnection,
                     arrivals: list[tuple[ConsumerRecord, dict[str, Any], bool]]) -> None:
        dead: list[dict[str, Any]] = []
        kept = await self._kept(conn, [row["delivery_id"] for _, row, _ in arrivals])
        changed: dict[str, dict[str, Any]] = {}
        duplicates = 0
        for rec, row, retraction in arrivals:
            did = row["delivery_id"]
            action = merge(kept.get(did), version=row["version"],
                           content_hash=row["content_hash"], retraction=retraction)
            if action is Action.STORE:
                kept[did] = Kept(row["version"], row["content_hash"], retraction)
                changed[did] = row
            elif action is Action.CONFLICT:
                self.dead_letter(dead, rec, CONFLICT, "delivery id already stored otherwise")
            else:  # a replay, or an older version arriving late: nothing to change
                duplicates += 1
        if duplicates:  # metrics once per batch, not once per record
            self.stats.duplicates += duplicates
            self._metrics.duplicates.labels(self.name).inc(duplicates)
        if changed:
            await self._db.bulk(inbox_deliveries, upsert=["delivery_id"]).execute_async(
                conn, list(changed.values()))
            classes = Counter(r["recipient"].split(":")[0] for r in changed.values())
            for cls, n in classes.items():
                self._metrics.inbox_stored.labels(cls).inc(n)
            self.stored += len(changed)
        if dead:
            await conn.execute(self._db.insert_ignore(outbox), dead)

    async def _kept(self, conn: AsyncConnection, ids: list[str]) -> dict[str, Kept]:
        t = inbox_deliveries
        found: dict[str, Kept] = {}
        for where in chunks_in(self._db.dialect, t.c.delivery_id, ids):
            rows = await conn.execute(
                select(t.c.delivery_id, t.c.version, t.c.content_hash, t.c.retracted_at)
                .where(where))
            for r in rows:
                found[r[0]] = Kept(r[1], r[2], r[3] is not None)
        return found

async def follow_inbox(
    service: InboxService,
    db: Database,
    codec: Codec,
    recipient: Recipient,
    *,
    live: bool = False,
    poll: float = 1.0,
) -> AsyncIterator[dict[str, Any]]:
    """What ``planr inbox`` shows: catch the inbox up with its topic, then yield its stored
    deliveries in topic order; with ``live``, keep catching up and yielding new ones."""
    position: tuple[int, int] | None = None
    while True:
        await service.catch_up()
        for pos, item in await read_stored(db, codec, recipient, position):
            position = pos
            yield item
        if not live:
            return
        await asyncio.sleep(poll)
