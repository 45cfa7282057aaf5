"""The transactional outbox: messages decided in a database transaction, sent afterwards.

Removal events, consultation audit records, OCAM requests and answers, the NTF's statistics
and dead letters are written to the ``outbox`` table in the same transaction as the change that
decided them, then produced (``acks=all``) and marked sent. A crash between the two resends
them: at-least-once on the wire, with deterministic ids for the readers to deduplicate. An OCAM
answer goes to the answers topic of the service its key names (the requesting service), and to
no other.

The JIB's consensus process writes its decisions, its deliveries (one topic per party: the
row's key is the recipient) and its audit records the same way.

With a signer, the messages are signed as they are sent, in chunks of
:data:`~planr.batching.CHUNK_RECORDS` (one signature per chunk, see
:func:`planr.signing.sign_chunk`), with the key of the process that sends them (the
projector's, the inbox service's, the aggregator's, or a consultation's ``projector`` key).
Services that share a store share its outbox table, so an outbox may be limited to some
kinds: the inbox service sends dead letters only, never what the common database decided.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import select, update

from consumers.metrics import StoreMetrics
from consumers.store import Database
from consumers.store.tables import outbox
from planr.batching import CHUNK_RECORDS
from planr.domain import Recipient, RecipientClass
from planr.errors import DeliveryError
from planr.kafka import KafkaConnection, make_producer
from planr.lifecycle import Service
from planr.signing import Signer, sign_chunk
from planr.topics import Topics

log = structlog.get_logger(__name__)

REMOVAL_KIND = "removal"
CONSULTATION_KIND = "consultation"
OCAM_REQUEST_KIND = "ocam_request"
OCAM_ANSWER_KIND = "ocam_answer"
DEAD_LETTER_KIND = "dead_letter"
NTF_KIND = "ntf_statistics"
JIB_DECISION_KIND = "jib_decision"
JIB_DELIVERY_KIND = "jib_delivery"  # the key is the recipient: its topic is the party's own
JIB_AUDIT_KIND = "jib_audit"
_FLUSH_ROWS = 1000


def outbox_row(
    message_id: str, kind: str, key: str, value: bytes, created_at: datetime
) -> dict[str, Any]:
    return {"message_id": message_id, "kind": kind, "message_key": key, "value": value,
            "created_at": created_at, "sent": False}


def topic_of(topics: Topics, kind: str, key: str) -> str:
    """The topic of an outbox message; an OCAM answer's key is the service it answers."""
    if kind == OCAM_ANSWER_KIND:
        return topics.ftf_ocam_answers(key)
    if kind == JIB_DELIVERY_KIND:
        return topics.jib_delivery(key)
    return {
        REMOVAL_KIND: topics.ftf_removals,
        CONSULTATION_KIND: topics.ftf_consultations,
        OCAM_REQUEST_KIND: topics.ftf_ocam_requests,
        DEAD_LETTER_KIND: topics.dead_letter,
        NTF_KIND: topics.delivery(Recipient(RecipientClass.NTF)),
        JIB_DECISION_KIND: topics.jib_decisions,
        JIB_AUDIT_KIND: topics.jib_audit,
    }[kind]


class Outbox(Service):
    """Sends unsent outbox rows. ``start()``/``stop()`` or ``async with``."""

    def __init__(
        self,
        *,
        conn: KafkaConnection,
        topics: Topics,
        metrics: StoreMetrics,
        signer: Signer | None = None,
        kinds: Collection[str] | None = None,
    ) -> None:
        self._signer = signer
        self._kinds = sorted(kinds) if kinds is not None else None
        self._topics = topics
        self._metrics = metrics
        self._conn = conn
        self._producer: Any = None  # created by start()

    async def _open(self) -> None:
        self._producer = make_producer(self._conn, linger_ms=2)
        await self._producer.start()

    async def _close(self) -> None:
        await self._producer.stop()

    async def flush(self, db: Database) -> int:
        """Send every unsent row, wait for the acknowledgements, mark them sent."""
        await self.start()
        total = 0
        unsent = select(outbox.c.message_id, outbox.c.kind, outbox.c.message_key,
                        outbox.c.value).where(outbox.c.sent.is_(False))
        if self._kinds is not None:
            unsent = unsent.where(outbox.c.kind.in_(self._kinds))
        while True:
            async with db.engine.connect() as conn:
                rows = (await conn.execute(
                    unsent.order_by(outbox.c.created_at, outbox.c.message_id).limit(_FLUSH_ROWS)
                )).all()
            if not rows:
                return total
            futures = await self._send([(topic_of(self._topics, r.kind, r.message_key),
                                         r.value, r.message_key.encode()) for r in rows])
            try:
                for fut in futures:
                    await fut
            except Exception as exc:
                raise DeliveryError(f"{len(rows)} outbox message(s) not acknowledged") from exc
            ids = [r.message_id for r in rows]
            async with db.transaction() as conn:
                await conn.execute(
                    update(outbox).where(outbox.c.message_id.in_(ids)).values(sent=True)
                )
            for r in rows:
                self._metrics.outbox_sent.labels(r.kind).inc()
            total += len(rows)
            log.debug("outbox.sent", count=len(rows))

    async def _send(self, messages: list[tuple[str, bytes, bytes]]) -> list[Any]:
        """Hand ``(topic, value, key)`` messages to the producer in order, signed in chunks."""
        signer = self._signer
        headers: list[list[tuple[str, bytes]] | None] = [None] * len(messages)
        if signer is not None:
            headers = [h for i in range(0, len(messages), CHUNK_RECORDS)
                       for h in sign_chunk(signer, [(topic, value) for topic, value, _ in
                                                    messages[i : i + CHUNK_RECORDS]])]
        return [await self._producer.send(topic, value=value, key=key, headers=h)
                for (topic, value, key), h in zip(messages, headers, strict=True)]
