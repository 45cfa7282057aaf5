"""Store-backed consumers: input offsets live in the database, next to the outputs.

A :class:`TrackedConsumer` has no consumer group. It assigns itself its topics' partitions
and seeks to the offsets stored in the database (or to the beginning), then, for each
batch, writes its outputs *and* the next offsets in one database transaction. A crash at any
point therefore loses nothing and applies nothing twice: after a restart the consumer
resumes exactly after the last committed batch. Kafka commits are never used.

Trust: before a subclass sees a batch, every record is checked against the key registry
(:mod:`planr.signing`): it must be signed by a registered key of ``expected_owner`` (the
router, for deliveries) valid at the batch's wall-clock time. A record that is not, or that
has no value, is dead-lettered in the batch's transaction and changes nothing else; its offset
is stored with the batch all the same.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from aiokafka import ConsumerRecord, TopicPartition
from sqlalchemy.ext.asyncio import AsyncConnection

from consumers.metrics import StoreMetrics
from consumers.outbox import DEAD_LETTER_KIND, Outbox, outbox_row
from consumers.store import Database
from consumers.store.tables import outbox as outbox_table
from planr.errors import TopicsMissingError
from planr.identity import CONFLICT, same_event
from planr.kafka import KafkaConnection, make_consumer
from planr.loop import Batch, ConsumeLoop
from planr.signing import ROUTER, KeyRegistry, SignatureError, verify_record
from schemas.codec import Codec
from schemas.dead_letter import dead_letter_record
from schemas.names import DEAD_LETTER

log = structlog.get_logger(__name__)

BAD_RECORD_NS = uuid.UUID("a3d0f4be-5d7c-4d67-8b0e-0f6e1d1c7b55")
#: seconds a one-shot :meth:`TrackedConsumer.catch_up` waits for the brokers and its topics
CATCH_UP_START_TIMEOUT = 15.0


@dataclass
class ConsumerStats:
    records: int = 0
    batches: int = 0
    duplicates: int = 0
    bad: int = 0


class TrackedConsumer(ConsumeLoop):
    """Base class: subclasses implement :meth:`handle` (writes in the given transaction),
    which sees only records signed by ``expected_owner``, checked against ``registry``."""

    def __init__(
        self,
        *,
        name: str,
        conn: KafkaConnection,
        db: Database,
        codec: Codec,
        metrics: StoreMetrics,
        topics: Sequence[str],
        registry: KeyRegistry,
        expected_owner: str = ROUTER,
        outbox: Outbox | None = None,
        max_batch: int = 2000,
    ) -> None:
        self.name = name
        self._registry = registry
        self._expected_owner = expected_owner
        self._db = db
        self._codec = codec
        self._metrics = metrics
        self._topics = list(topics)
        self._outbox = outbox
        self._conn = conn
        self._max_batch = max_batch
        self._consumer: Any = None  # created by start(): no Kafka client until it is used
        super().__init__()
        self._tps: list[TopicPartition] = []
        self.stats = ConsumerStats()

    async def _open(self) -> None:
        self._consumer = make_consumer(self._conn, group_id=None, max_records=self._max_batch)
        try:
            await self._consumer.start()
            await self._assign()
        except BaseException:
            await self._consumer.stop()
            raise

    async def _close(self) -> None:
        await self._consumer.stop()

    async def _assign(self) -> None:
        await self._consumer.topics()  # refresh metadata of every topic
        tps: list[TopicPartition] = []
        missing = 0
        for topic in self._topics:
            parts = self._consumer.partitions_for_topic(topic)
            if not parts:
                missing += 1
                continue
            tps.extend(TopicPartition(topic, p) for p in sorted(parts))
        if missing:  # the service started before the provisioning: start() retries
            raise TopicsMissingError(f"{self.name}: {missing} of its {len(self._topics)} "
                                     "topic(s) do not exist; run 'planr topics provision'")
        stored = await self._db.load_offsets(self.name)
        self._consumer.assign(tps)
        fresh = []
        for tp in tps:
            offset = stored.get((tp.topic, tp.partition))
            if offset is None:
                fresh.append(tp)
            else:
                self._consumer.seek(tp, offset)
        if fresh:
            await self._consumer.seek_to_beginning(*fresh)
        self._tps = tps
        log.info("store_consumer.assigned", consumer=self.name, partitions=len(tps),
                 resumed=len(tps) - len(fresh))

    async def handle(self, conn: AsyncConnection, batch: Batch) -> None:
        raise NotImplementedError

    async def after_commit(self) -> None:
        """Called after each committed batch and when idle (publish the outbox, gauges)."""
        if self._outbox is not None:
            await self._outbox.flush(self._db)

    async def _poll(self) -> Batch:
        batch: Batch = await self._consumer.getmany(timeout_ms=self.poll_timeout_ms)
        return batch

    async def _handle(self, batch: Batch) -> None:
        """The batch's writes and its next offsets, in one transaction (the commit rule: the
        offsets live in the database, committed with the outputs they cover)."""
        dead: list[dict[str, Any]] = []
        authentic = self._authentic(batch, dead)
        async with self._db.transaction() as conn:
            if dead:
                await conn.execute(self._db.insert_ignore(outbox_table), dead)
            if authentic:
                await self.handle(conn, authentic)
            await self._db.save_offsets(
                conn, self.name,
                {(tp.topic, tp.partition): recs[-1].offset + 1 for tp, recs in batch.items()},
            )

    def _authentic(self, batch: Batch, dead: list[dict[str, Any]]) -> Batch:
        """The records of ``batch`` signed by the expected owner; the others go to ``dead``."""
        now = datetime.now(UTC)  # wall clock: record timestamps are not covered by signatures
        out: Batch = {}
        for tp, records in batch.items():
            kept = []
            for rec in records:
                if rec.value is None:
                    self.dead_letter(dead, rec, "undecodable", "record has no value (tombstone)")
                    continue
                try:
                    verify_record(self._registry, rec.topic, rec.value, rec.headers, at=now,
                                  expected_owner=self._expected_owner)
                except SignatureError as exc:
                    log.warning("store_consumer.unauthenticated", consumer=self.name,
                                topic=rec.topic, partition=rec.partition, offset=rec.offset,
                                detail_reason=exc.detail_reason, key_id=exc.key_id)
                    self.dead_letter(dead, rec, exc.reason, exc.detail)
                    continue
                kept.append(rec)
            if kept:
                out[tp] = kept
        return out

    async def _commit(self, batch: Batch) -> None:
        """Already committed with the outputs; then publish what the batch put in the outbox."""
        self.stats.batches += 1
        self.stats.records += sum(len(r) for r in batch.values())
        self._observe_applied(batch)
        await self.after_commit()

    def _observe_applied(self, batch: Batch) -> None:
        """Delivery -> applied: each record's broker timestamp to now (its batch committed)."""
        histogram = self._metrics.applied_latency.labels(self.name)
        now_ms = time.time() * 1000
        for records in batch.values():
            for rec in records:
                histogram.observe(max(0.0, (now_ms - rec.timestamp) / 1000))

    async def _begin(self) -> None:
        await self.after_commit()

    async def _end(self) -> None:
        await self.after_commit()

    def _result(self) -> ConsumerStats:
        return self.stats

    async def run(self, *, until_idle: float | None = None) -> ConsumerStats:
        """Consume until stopped, or until ``until_idle`` seconds pass without input."""
        stats: ConsumerStats = await super().run(until_idle=until_idle)
        return stats

    async def catch_up(self, *, start_timeout: float | None = CATCH_UP_START_TIMEOUT
                       ) -> ConsumerStats:
        """Consume up to the end of every partition as of now, then return (``planr inbox``).
        A one-shot use: if not started yet, :meth:`start` retries for ``start_timeout``
        seconds at most (``None``: until stopped) while the brokers or the topics are missing.

        The end is the high watermark that fetch responses carry: Tansu answers ``ListOffsets``
        (``end_offsets``) with the base offset of the last record batch, short of the end.
        """
        if not self.started:
            self.start_timeout = start_timeout
        await self.start()
        end = await self._consumer.end_offsets(self._tps)
        empty_polls = 0
        while True:
            batch = await self._consumer.getmany(timeout_ms=300)
            if batch:
                await self.process(batch)
                empty_polls = 0
                continue
            empty_polls += 1
            pending = False
            for tp in self._tps:
                position = await self._consumer.position(tp)
                high = self._consumer.highwater(tp)
                if position < end[tp] or (high is None and empty_polls < 5) or (
                    high is not None and position < high
                ):
                    pending = True
            if not pending:
                break
        await self.after_commit()
        return self.stats

    def _repeated(self, rows: list[dict[str, Any]], rec: ConsumerRecord, stored: str | None,
                  fingerprint: str) -> None:
        """An id seen before: a duplicate (skipped, counted) or, with other content, a conflict
        (dead-lettered, counted): never a silent skip."""
        if same_event(stored, fingerprint):
            self.stats.duplicates += 1
            self._metrics.duplicates.labels(self.name).inc()
        else:
            self.dead_letter(rows, rec, CONFLICT, "id already stored with other content")

    def dead_letter(
        self, rows: list[dict[str, Any]], rec: ConsumerRecord, reason: str, detail: str
    ) -> None:
        """Queue ``rec`` for the dead-letter topic (in the batch's transaction) and count it."""
        # failed_at from the record itself: a replay writes the same row
        record = dead_letter_record(rec, reason, detail,
                                    datetime.fromtimestamp(rec.timestamp / 1000, UTC))
        mid = str(uuid.uuid5(BAD_RECORD_NS, f"{rec.topic}|{rec.partition}|{rec.offset}"))
        rows.append(outbox_row(mid, DEAD_LETTER_KIND, rec.topic,
                               self._codec.encode(DEAD_LETTER, record), record["failed_at"]))
        self.stats.bad += 1
        self._metrics.bad_records.labels(self.name, reason).inc()
        log.warning("store_consumer.dead_letter", consumer=self.name, reason=reason,
                    topic=rec.topic, partition=rec.partition, offset=rec.offset)
