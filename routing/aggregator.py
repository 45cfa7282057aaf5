"""The National Taskforce aggregator: counts by phenomenon, arrondissement and month.

The router writes one minimal ``NtfFact`` (no subject id, no text) per signal the policy lets
the NTF count. The aggregator counts them and, every ``interval`` seconds, emits
``NtfAggregate`` records to the NTF's delivery topic.

Effectively-once without transactions: input offsets are cut into fixed blocks of ``block``
records per partition. Each aggregate is the *cumulative* count of one cell within one block,
and its id is derived from (partition, block, cell): a re-emission after a restart carries the
same id and supersedes the earlier one (readers keep the latest per id and sum). Offsets are
committed only up to the start of the oldest incomplete block, so a restart re-reads exactly
the blocks whose counts are not final.

Trust: a fact counts only if it is signed by a registered, valid ``router`` key; anything else
is dead-lettered (``unauthenticated``). Every record the aggregator produces is signed with its
own key (owner ``aggregator``).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from planr.domain import Recipient, RecipientClass
from planr.errors import DeliveryError, PlanrError, UsageError
from planr.kafka import KafkaConnection, make_consumer, make_producer
from planr.loop import Batch, ConsumeLoop
from planr.signing import (
    AGGREGATOR,
    ROUTER,
    KeyRegistry,
    SignatureError,
    Signer,
    sign_headers,
    verify_record,
)
from planr.telemetry import Metrics
from planr.topics import Topics
from schemas.codec import Codec
from schemas.dead_letter import dead_letter_record
from schemas.names import DEAD_LETTER, NTF_AGGREGATE, NTF_FACT

log = structlog.get_logger(__name__)
AGG_NS = uuid.UUID("0b7e3d1c-2f4a-4c55-8a0e-9d6b1f2e3c4d")
Cell = tuple[str, str, str]  # period, arrondissement, phenomenon


@dataclass
class _Block:
    counts: Counter[Cell] = field(default_factory=Counter)
    seen: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    policy_version: str = ""
    dirty: bool = False


class Aggregator(ConsumeLoop):
    """``registry``: the keys facts are checked against (owner ``router``); ``signer``: the
    aggregator's own key (owner ``aggregator``, registered and valid now, else UsageError)."""

    def __init__(
        self,
        *,
        conn: KafkaConnection,
        topics: Topics,
        codec: Codec,
        metrics: Metrics,
        registry: KeyRegistry,
        signer: Signer,
        group_id: str = "planr-ntf-aggregator",
        interval: float = 5.0,
        block: int = 1000,
    ) -> None:
        if signer.owner != AGGREGATOR:
            raise UsageError(f"signer: key {signer.key_id} belongs to {signer.owner}, "
                             f"not to the {AGGREGATOR}")
        registry.check_signer(signer, at=datetime.now(UTC))
        self._registry = registry
        self._signer = signer
        self._topics = topics
        self._codec = codec
        self._metrics = metrics
        self._interval = interval
        self._block = block
        self._out = topics.delivery(Recipient(RecipientClass.NTF))
        self._conn = conn
        self._group_id = group_id
        # Clients are created in start(): an object never started holds no sockets.
        self._consumer: AIOKafkaConsumer
        self._producer: AIOKafkaProducer
        self._blocks: dict[tuple[TopicPartition, int], _Block] = {}
        self._position: dict[TopicPartition, int] = {}
        super().__init__()
        self._last_flush = time.monotonic()
        self.emitted = 0
        self.facts = 0

    async def _open(self) -> None:
        self._producer = make_producer(self._conn)
        self._consumer = make_consumer(self._conn, self._topics.ntf_facts,
                                       group_id=self._group_id)
        await self._producer.start()
        try:
            await self._consumer.start()
        except BaseException:
            await self._producer.stop()
            raise

    async def _close(self) -> None:
        try:
            await self._consumer.stop()
        finally:
            await self._producer.stop()

    async def _poll(self) -> Batch:
        batch: Batch = await self._consumer.getmany(timeout_ms=self.poll_timeout_ms)
        return batch

    def _ready(self) -> bool:
        return bool(self._consumer.assignment())

    async def _handle(self, batch: Batch) -> None:
        await self._absorb(batch)

    async def _commit(self, batch: Batch) -> None:
        """Nothing per batch: offsets are committed by :meth:`flush`, up to complete blocks."""

    async def _tick(self) -> None:
        if time.monotonic() - self._last_flush >= self._interval:
            await self.flush()
            self._last_flush = time.monotonic()

    async def _end(self) -> None:
        await self.flush()

    async def _absorb(self, batch: Batch) -> None:
        pending = []
        now = datetime.now(UTC)  # the batch's wall clock: record timestamps are not signed
        for tp, records in batch.items():
            for rec in records:
                self._position[tp] = rec.offset + 1
                if rec.value is None:
                    pending.append(await self._dead_letter(rec, "undecodable", "tombstone"))
                    continue
                try:
                    verify_record(self._registry, rec.topic, rec.value, rec.headers, at=now,
                                  expected_owner=ROUTER)
                    fact = self._codec.decode(rec.value, NTF_FACT)
                except SignatureError as exc:
                    pending.append(await self._dead_letter(rec, exc.reason, exc.detail))
                    continue
                except (PlanrError, TypeError) as exc:
                    reason = getattr(exc, "reason", "undecodable")
                    pending.append(await self._dead_letter(rec, reason,
                                                           "NtfFact could not be read"))
                    continue
                blk = self._blocks.setdefault((tp, rec.offset // self._block), _Block())
                what = (fact["period"], fact["arrondissement"], tuple(fact["phenomena"]))
                known = blk.seen.get(fact["event_id"])
                if known is not None:  # a replay, or the same id with other content
                    if known != what:
                        pending.append(await self._dead_letter(
                            rec, "event_id_conflict", "event id already counted otherwise"))
                    continue
                blk.seen[fact["event_id"]] = what
                blk.policy_version = fact["policy_version"]
                for ph in fact["phenomena"] or ["none"]:
                    blk.counts[(fact["period"], fact["arrondissement"], ph)] += 1
                blk.dirty = True
                self.facts += 1
        if pending:
            await asyncio.gather(*pending)

    async def _dead_letter(
        self, rec: ConsumerRecord, reason: str, detail: str = "NtfFact could not be read"
    ) -> Any:
        self._metrics.dead_letters.labels(reason).inc()
        log.warning("aggregator.dead_letter", reason=reason, detail=detail, topic=rec.topic,
                    partition=rec.partition, offset=rec.offset)
        value = self._codec.encode(DEAD_LETTER, dead_letter_record(rec, reason, detail))
        return await self._send(self._topics.dead_letter, value, rec.key)

    async def _send(self, topic: str, value: bytes, key: bytes | None) -> Any:
        """Produce one record signed with the aggregator's key; the delivery future."""
        return await self._producer.send(topic, value=value, key=key,
                                         headers=sign_headers(self._signer, topic, value))

    async def flush(self) -> int:
        """Emit the counts of every changed block, then commit up to complete blocks."""
        now = datetime.now(UTC)
        pending = []
        for (tp, number), blk in self._blocks.items():
            if not blk.dirty:
                continue
            for (period, arr, ph), count in sorted(blk.counts.items()):
                name = f"{tp.topic}|{tp.partition}|{number}|{period}|{arr}|{ph}"
                agg_id = uuid.uuid5(AGG_NS, name)
                value = self._codec.encode(NTF_AGGREGATE, {
                    "aggregate_id": str(agg_id), "period": period, "arrondissement": arr,
                    "phenomenon": ph, "count": count, "policy_version": blk.policy_version,
                    "emitted_at": now,
                })  # fmt: skip
                pending.append(await self._send(self._out, value, f"{period}|{arr}".encode()))
            blk.dirty = False
        try:
            await asyncio.gather(*pending)
        except Exception as exc:
            raise DeliveryError("NTF aggregates not acknowledged; offsets not committed") from exc
        self.emitted += len(pending)
        self._metrics.aggregates_emitted.inc(len(pending))
        commits: dict[TopicPartition, int] = {}
        for tp, position in self._position.items():
            complete_upto = (position // self._block) * self._block
            if complete_upto > 0:
                commits[tp] = complete_upto
            done = [k for k in self._blocks
                    if k[0] == tp and (k[1] + 1) * self._block <= complete_upto]
            for key in done:
                del self._blocks[key]
        if commits:
            await self._consumer.commit(commits)
        return len(pending)


def totals(aggregates: list[dict[str, Any]]) -> Counter[Cell]:
    """What the NTF reads: the latest record per aggregate id, summed per cell."""
    latest: dict[str, dict[str, Any]] = {}
    for a in aggregates:
        latest[a["aggregate_id"]] = a
    out: Counter[Cell] = Counter()
    for a in latest.values():
        out[(a["period"], a["arrondissement"], a["phenomenon"])] += int(a["count"])
    return out
