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
from collections.abc import AsyncIterator, Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import select, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection

from consumers.metrics import StoreMetrics
from consumers.outbox import Outbox
from consumers.store import Database
from consumers.store.tables import inbox_deliveries, outbox
from consumers.tracked import TrackedConsumer
from planr.domain import Recipient, RecipientClass, all_recipients
from planr.errors import PlanrError
from planr.kafka import KafkaConnection
from planr.loop import Batch
from planr.signing import KeyRegistry
from planr.topics import Topics
from schemas.codec import Codec
from schemas.names import DELIVERY, view_schema_name

INBOXES = "inboxes"
INBOX_CLASSES = frozenset({RecipientClass.TFL, RecipientClass.WG, RecipientClass.CSILR})


def inbox_recipients() -> list[Recipient]:
    """Every recipient with a durable inbox: 12 TFL, 12 WG, 565 CSIL R."""
    return [r for r in all_recipients() if r.cls in INBOX_CLASSES]


def jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    return value


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
    ) -> None:
        chosen = list(recipients) if recipients is not None else inbox_recipients()
        for r in chosen:
            if r.cls not in INBOX_CLASSES:
                raise PlanrError(f"{r} has no durable inbox")
        self._by_topic = {topics.delivery(r): r for r in chosen}
        super().__init__(name=INBOXES, conn=conn, db=db, codec=codec, metrics=metrics,
                         topics=list(self._by_topic), registry=registry, outbox=outbox,
                         max_batch=max_batch)
        self.stored = 0

    async def handle(self, conn: AsyncConnection, batch: Batch) -> None:
        rows: list[dict[str, Any]] = []
        dead: list[dict[str, Any]] = []
        for tp, records in batch.items():
            expected = str(self._by_topic[tp.topic])
            for rec in records:
                try:
                    env = self._codec.decode(rec.value, DELIVERY)
                    self._codec.decode(env["payload"], view_schema_name(env["view"]))
                except PlanrError as exc:
                    self.dead_letter(dead, rec, exc.reason, str(exc))
                    continue
                if env["recipient"] != expected:
                    self.dead_letter(dead, rec, "recipient_mismatch",
                                     "delivery addressed to another recipient")
                    continue
                rows.append({
                    "delivery_id": env["delivery_id"], "recipient": env["recipient"],
                    "event_id": env["event_id"], "rule": env["rule"],
                    "rules": ",".join(env.get("rules") or ()),
                    "policy_version": env["policy_version"], "routed_at": env["routed_at"],
                    "view": env["view"], "payload": env["payload"],
                    "topic_partition": rec.partition, "topic_offset": rec.offset,
                })
        if rows:
            known = await self._db.existing(conn, inbox_deliveries.c.delivery_id,
                                            [r["delivery_id"] for r in rows])
            fresh: dict[str, dict[str, Any]] = {}
            for r in rows:
                if r["delivery_id"] in known or r["delivery_id"] in fresh:
                    self.stats.duplicates += 1
                    self._metrics.duplicates.labels(self.name).inc()
                else:
                    fresh[r["delivery_id"]] = r
            if fresh:
                await conn.execute(self._db.insert_ignore(inbox_deliveries),
                                   list(fresh.values()))
                for r in fresh.values():
                    self._metrics.inbox_stored.labels(r["recipient"].split(":")[0]).inc()
                self.stored += len(fresh)
        if dead:
            await conn.execute(self._db.insert_ignore(outbox), dead)


async def read_stored(
    db: Database,
    codec: Codec,
    recipient: Recipient,
    after: tuple[int, int] | None = None,
) -> list[tuple[tuple[int, int], dict[str, Any]]]:
    """The stored deliveries of ``recipient`` in topic order (after a position), JSON-ready,
    with the fields every inbox reader relies on (docs/operations.md)."""
    t = inbox_deliveries
    query = select(t).where(t.c.recipient == str(recipient))
    if after is not None:
        query = query.where(tuple_(t.c.topic_partition, t.c.topic_offset) > tuple_(*after))
    query = query.order_by(t.c.topic_partition, t.c.topic_offset)
    async with db.engine.connect() as conn:
        rows = (await conn.execute(query)).mappings().all()
    out = []
    for r in rows:
        item = {
            "delivery_id": r["delivery_id"], "event_id": r["event_id"],
            "recipient": r["recipient"], "rule": r["rule"],
            "rules": [x for x in r["rules"].split(",") if x],
            "policy_version": r["policy_version"], "routed_at": r["routed_at"],
            "view": r["view"],
            "payload": codec.decode(r["payload"], view_schema_name(r["view"])),
        }
        out.append(((r["topic_partition"], r["topic_offset"]), jsonable(item)))
    return out


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
