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

Reading ahead: while the database writes one batch (in the driver's thread, or in the server),
the consumer reads the next batch and prepares it: checks its signatures and decodes its
records (:mod:`consumers.checking`: in slices that give way to the write in progress, or in a
process of its own with ``check_process``), then runs the subclass's
:meth:`TrackedConsumer.prepare` (work that reads no table). Nothing of that batch is written
before its own transaction, which reads the tables as the previous one committed them: the
guarantees above are those of one batch at a time. A batch read ahead when a stop is
requested is still processed and committed before the loop ends; after a failure it is
dropped with the process, and read again from the stored offsets.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from aiokafka import ConsumerRecord, TopicPartition
from sqlalchemy.ext.asyncio import AsyncConnection

from consumers.checking import Check, CheckWorker, RecordCheck, Refused
from consumers.metrics import StoreMetrics
from consumers.outbox import DEAD_LETTER_KIND, Outbox, outbox_row
from consumers.store import Database
from consumers.store.tables import outbox as outbox_table
from planr.errors import TopicsMissingError
from planr.identity import CONFLICT, same_event
from planr.kafka import KafkaConnection, make_consumer
from planr.loop import Batch, ConsumeLoop, settle_heap
from planr.signing import ROUTER, KeyRegistry
from schemas.codec import Codec
from schemas.dead_letter import dead_letter_record
from schemas.names import DEAD_LETTER

log = structlog.get_logger(__name__)

BAD_RECORD_NS = uuid.UUID("a3d0f4be-5d7c-4d67-8b0e-0f6e1d1c7b55")
#: seconds a one-shot :meth:`TrackedConsumer.catch_up` waits for the brokers and its topics
CATCH_UP_START_TIMEOUT = 15.0


#: records checked (and prepared) between two chances for the write in progress to go on
PREPARE_SLICE = 128


@dataclass
class Prepared:
    """A batch made ready outside any transaction: what :meth:`TrackedConsumer.prepare` made of
    its authentic records (``None``: none), and the dead letters of the others."""

    batch: Batch
    work: Any
    dead: list[dict[str, Any]]


@dataclass
class ConsumerStats:
    records: int = 0
    batches: int = 0
    duplicates: int = 0
    bad: int = 0
    ahead: int = 0  # batches read and prepared while the one before was written
    verify_seconds: float = 0.0  # checking signatures (in the checking process, if any)


class TrackedConsumer(ConsumeLoop):
    """Base class: subclasses implement :meth:`handle` (writes in the given transaction),
    which sees only records signed by ``expected_owner``, checked against ``registry``, as
    :meth:`prepare` made them ready."""

    #: read and prepare the next batch while the current one is written (module doc);
    #: ``None``: when the store is a server (PostgreSQL) or the checks run in their own
    #: process. SQLite writes in a thread of this process that takes the interpreter lock for
    #: every row: checking in this process meanwhile slowed the writes more than it saved
    #: (measured, see docs/benchmarks.md)
    read_ahead: bool | None = None

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
        check_process: bool = False,
    ) -> None:
        self.name = name
        self._check_process = check_process
        self._worker: CheckWorker | None = None
        self._check: Check | None = None  # record_check(), built once for checks in process
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
        self._ahead: Prepared | None = None
        self.stats = ConsumerStats()

    async def _open(self) -> None:
        self._ahead = None
        self._consumer = make_consumer(self._conn, group_id=None, max_records=self._max_batch)
        try:
            await self._consumer.start()
            await self._assign()
            if self._check_process:
                self._worker = CheckWorker(self.record_check())
                await self._worker.start()
        except BaseException:
            try:
                await self._consumer.stop()
            finally:
                await self._stop_worker()
            raise

    async def _close(self) -> None:
        try:
            await self._consumer.stop()
        finally:
            await self._stop_worker()

    async def _stop_worker(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            await worker.stop()

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

    def decoder(self) -> Callable[[str, bytes], Any] | None:
        """What decodes an authentic record (topic, value) for :meth:`prepare`: picklable (it
        may run in the checking process, :mod:`consumers.checking`), reading no state of this
        consumer; it raises a PlanrError for a record to dead-letter. Default: none."""
        return None

    def record_check(self) -> Check:
        """The check every record passes before :meth:`prepare` (signature, then
        :meth:`decoder`)."""
        return RecordCheck(self._registry, self._expected_owner, self.decoder())

    async def prepare(self, checked: list[tuple[ConsumerRecord, Any]],
                      dead: list[dict[str, Any]]) -> Any:  # noqa: ARG002
        """What :meth:`handle` gets of the authentic records of a batch, each with what
        :meth:`decoder` made of it: work that reads no table, done outside the transaction,
        possibly while the previous batch is written; a record refused here goes to ``dead``
        (:meth:`dead_letter`). Give way to the loop (``await asyncio.sleep(0)``) every
        :data:`PREPARE_SLICE` records or so. Default: the records, as a batch."""
        batch: Batch = {}
        for rec, _ in checked:
            batch.setdefault(TopicPartition(rec.topic, rec.partition), []).append(rec)
        return batch

    async def handle(self, conn: AsyncConnection, batch: Any) -> None:
        """Write what :meth:`prepare` returned, in ``conn``'s transaction."""
        raise NotImplementedError

    async def after_commit(self) -> None:
        """Called after each committed batch and when idle (publish the outbox, gauges)."""
        if self._outbox is not None:
            await self._outbox.flush(self._db)

    async def _poll(self) -> Batch:
        if self._ahead is not None:
            return self._ahead.batch
        batch: Batch = await self._consumer.getmany(timeout_ms=self.poll_timeout_ms)
        return batch

    async def _handle(self, batch: Batch) -> None:
        """The batch's writes and its next offsets, in one transaction (the commit rule: the
        offsets live in the database, committed with the outputs they cover); meanwhile, the
        next batch is read and prepared (module doc)."""
        if self._ahead is not None and self._ahead.batch is batch:
            prepared, self._ahead = self._ahead, None
        else:
            prepared = await self._prepare(batch)
        reading = None
        ahead = self.read_ahead if self.read_ahead is not None else (
            self._db.dialect == "postgresql" or self._worker is not None)
        if (ahead and self._ahead is None and self._consumer is not None
                and not self._stop_requested.is_set()):
            reading = asyncio.ensure_future(self._read_ahead())
        try:
            async with self._db.transaction() as conn:
                if prepared.dead:
                    await conn.execute(self._db.insert_ignore(outbox_table), prepared.dead)
                if prepared.work is not None:
                    await self.handle(conn, prepared.work)
                await self._db.save_offsets(
                    conn, self.name,
                    {(tp.topic, tp.partition): recs[-1].offset + 1
                     for tp, recs in batch.items()},
                )
        except BaseException:
            if reading is not None:
                reading.cancel()  # the process fails: what was read ahead is read again
            raise
        if reading is not None:
            await reading

    async def _read_ahead(self) -> None:
        """The next batch, if one is already fetched, made ready (``self._ahead``)."""
        batch: Batch = await self._consumer.getmany(timeout_ms=0)
        if batch:
            self._ahead = await self._prepare(batch)
            self.stats.ahead += 1

    async def _prepare(self, batch: Batch) -> Prepared:
        """Check and decode the records of ``batch`` (:meth:`record_check`: in the checking
        process, or here in slices), dead-letter the refused ones, then :meth:`prepare` the
        others."""
        records = [rec for recs in batch.values() for rec in recs]
        items = [(rec.topic, rec.value, rec.headers) for rec in records]
        if self._worker is not None:
            outcomes, verifying = await self._worker.check(items)
        else:
            if self._check is None:
                self._check = self.record_check()
            check, outcomes, verifying = self._check, [], 0.0
            for i in range(0, len(items), PREPARE_SLICE):
                part, seconds = check(items[i : i + PREPARE_SLICE])
                outcomes += part
                verifying += seconds
                await asyncio.sleep(0)
        self.stats.verify_seconds += verifying
        dead: list[dict[str, Any]] = []
        checked = []
        for rec, outcome in zip(records, outcomes, strict=True):
            if isinstance(outcome, Refused):
                if outcome.detail_reason is not None:
                    log.warning("store_consumer.unauthenticated", consumer=self.name,
                                topic=rec.topic, partition=rec.partition, offset=rec.offset,
                                detail_reason=outcome.detail_reason, key_id=outcome.key_id)
                self.dead_letter(dead, rec, outcome.reason, outcome.detail)
            else:
                checked.append((rec, outcome))
        work = await self.prepare(checked, dead) if checked else None
        return Prepared(batch, work, dead)

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
        while self._ahead is not None:  # read ahead before the stop: finish it too
            await self.process(self._ahead.batch)
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
        settle_heap()
        end = await self._consumer.end_offsets(self._tps)
        empty_polls = 0
        while True:
            batch = (self._ahead.batch if self._ahead is not None
                     else await self._consumer.getmany(timeout_ms=300))
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
