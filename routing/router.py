"""The routing consumer: ingress topics in, deliveries + audit + dead letters out.

For each batch of ingress records the router checks authenticity first (the record must be
signed by a registered, valid key of the agency that owns the ingress topic; see
:mod:`planr.signing`), then decodes (the agency a signal claims must own that topic too),
decides every candidate recipient, produces every delivery and audit record, each signed with
the router's own key, waits until the broker has acknowledged all of them, and only then
commits the batch's offsets (at-least-once). Delivery ids are deterministic, so
downstream sinks deduplicate a replayed batch (effectively-once in every projection).

A record that cannot be processed goes to the dead-letter topic with a reason; the router
never dies on a bad record.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord

from planr.batching import BatchSender
from planr.domain import Recipient
from planr.errors import InvalidSignalError, PlanrError, UsageError
from planr.kafka import KafkaConnection, make_consumer, make_producer
from planr.loop import Batch, ConsumeLoop
from planr.signing import ROUTER, KeyRegistry, SignatureError, Signer, verify_record
from planr.telemetry import Metrics
from planr.topics import Topics
from routing.engine import Engine, Facts, agency_label
from routing.views import Views
from schemas.codec import Codec
from schemas.dead_letter import dead_letter_record
from schemas.names import DEAD_LETTER, DELIVERY, NTF_FACT, ROUTING_DECISION, SIGNAL
from schemas.validation import validate_signal_record

log = structlog.get_logger(__name__)

DELIVERY_NS = uuid.UUID("6f1c3a52-6d7e-4bd4-9a51-3e0d6c1f8a27")


def delivery_id(event_id: str, recipient: Recipient, policy_version: str) -> str:
    """Deterministic, so that a replayed batch yields the same ids for sinks to deduplicate."""
    return str(uuid.uuid5(DELIVERY_NS, f"{event_id}|{recipient}|{policy_version}"))


@dataclass
class RouterStats:
    records: int = 0
    signals: int = 0
    deliveries: Counter[str] = field(default_factory=Counter)
    denials: Counter[str] = field(default_factory=Counter)
    audits: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)
    batches: int = 0


class Router(ConsumeLoop):
    """Consume ingress topics and route. ``start()``/``stop()`` or ``async with``.

    ``registry`` holds the public keys ingress records are checked against; ``signer`` is the
    router's own key (owner ``router``, registered and valid now, else UsageError), which
    signs every record the router produces.
    """

    def __init__(
        self,
        *,
        conn: KafkaConnection,
        topics: Topics,
        engine: Engine,
        views: Views,
        codec: Codec,
        metrics: Metrics,
        registry: KeyRegistry,
        signer: Signer,
        group_id: str = "planr-router",
        ingress: Iterable[str] | None = None,
        max_batch: int = 2000,
    ) -> None:
        if signer.owner != ROUTER:
            raise UsageError(f"signer: key {signer.key_id} belongs to {signer.owner}, "
                             f"not to the {ROUTER}")
        registry.check_signer(signer, at=datetime.now(UTC))
        self._registry = registry
        self._signer = signer
        self._topics = topics
        self._engine = engine
        self._views = views
        self._codec = codec
        self._metrics = metrics
        self._ingress = list(ingress) if ingress is not None else topics.all_ingress()
        self._conn = conn
        self._group_id = group_id
        self._max_batch = max_batch
        super().__init__()
        # Clients are created in start(): an object never started holds no sockets.
        self._consumer: AIOKafkaConsumer
        self._producer: AIOKafkaProducer
        self.stats = RouterStats()
        self._counters: dict[tuple[str, bool], Any] = {}
        metrics.policy_info.labels(engine.version).set(1)

    async def _open(self) -> None:
        self._producer = make_producer(self._conn)
        self._consumer = make_consumer(self._conn, *self._ingress, group_id=self._group_id,
                                       max_records=self._max_batch)
        await self._producer.start()
        try:
            await self._consumer.start()
        except BaseException:
            await self._producer.stop()
            raise
        log.info("router.started", policy_version=self._engine.version, topics=len(self._ingress))

    async def _close(self) -> None:
        """Leave the group and flush the producer."""
        try:
            await self._consumer.stop()
        finally:
            await self._producer.stop()
        log.info("router.stopped", records=self.stats.records, signals=self.stats.signals)

    async def _poll(self) -> Batch:
        batch: Batch = await self._consumer.getmany(timeout_ms=self.poll_timeout_ms)
        return batch

    def _ready(self) -> bool:
        return bool(self._consumer.assignment())

    def _result(self) -> RouterStats:
        return self.stats

    async def run(self, *, until_idle: float | None = None) -> RouterStats:
        """Route until stopped, or until ``until_idle`` seconds pass with no input."""
        stats: RouterStats = await super().run(until_idle=until_idle)
        return stats

    async def _handle(self, batch: Batch) -> None:
        """Decide and produce every output of the batch; return once all are acknowledged."""
        out = BatchSender(self._producer, signer=self._signer)
        published: list[datetime] = []
        # The batch's wall-clock time, not the record timestamps: those are set by the
        # producer and not covered by the signature, so they cannot extend a key's validity.
        now = datetime.now(UTC)
        for records in batch.values():
            for rec in records:
                published_at = await self._route_record(rec, now, out)
                if published_at is not None:
                    published.append(published_at)
        await out.flush()  # DeliveryError: nothing is committed, the batch is redelivered
        acked = datetime.now(UTC)
        for p in published:
            self._metrics.routing_latency.observe(max(0.0, (acked - p).total_seconds()))

    async def _commit(self, batch: Batch) -> None:
        """The commit rule: the next offset of every partition, once its outputs are acked."""
        await self._consumer.commit({tp: recs[-1].offset + 1 for tp, recs in batch.items()})
        count = sum(len(recs) for recs in batch.values())
        self.stats.records += count
        self.stats.batches += 1
        self._metrics.batch_size.observe(count)

    async def _authentic(self, rec: ConsumerRecord, now: datetime, out: BatchSender) -> bool:
        """Whether ``rec`` is signed by the agency owning its ingress topic; if not, it is
        dead-lettered (``unauthenticated``, the sub-reason and key id) and never decoded."""
        expected = self._topics.agency_of_ingress(rec.topic)
        if expected is None:
            await self._dead_letter(rec, "agency_mismatch", "not an ingress topic", out)
            return False
        if rec.value is None:
            await self._dead_letter(rec, "undecodable", "record has no value (tombstone)", out)
            return False
        try:
            verify_record(self._registry, rec.topic, rec.value, rec.headers, at=now,
                          expected_owner=expected.value)
        except SignatureError as exc:
            log.warning("router.unauthenticated", topic=rec.topic, partition=rec.partition,
                        offset=rec.offset, detail_reason=exc.detail_reason, key_id=exc.key_id)
            await self._dead_letter(rec, exc.reason, exc.detail, out)
            return False
        return True

    async def _route_record(
        self, rec: ConsumerRecord, now: datetime, out: BatchSender
    ) -> datetime | None:
        if not await self._authentic(rec, now, out):
            return None
        try:
            signal = self._codec.decode(rec.value, SIGNAL)
            expected = self._topics.agency_of_ingress(rec.topic)
            if expected is None or signal["agency"] != expected.value:
                await self._dead_letter(rec, "agency_mismatch",
                                        "claimed agency does not own this ingress topic",
                                        out)
                return None
            validate_signal_record(signal, now=now)
            facts = Facts.of(signal)
        except InvalidSignalError as exc:  # the field path, never the value
            await self._dead_letter(rec, exc.reason, exc.field or "(signal)", out)
            return None
        except PlanrError as exc:
            await self._dead_letter(rec, exc.reason, str(exc), out)
            return None
        except (KeyError, TypeError, ValueError) as exc:
            await self._dead_letter(rec, "invalid_signal", type(exc).__name__, out)
            return None
        await self._decide_and_emit(signal, facts, now, out)
        return signal["published_at"]  # type: ignore[no-any-return]

    async def _decide_and_emit(
        self, signal: dict[str, Any], facts: Facts, now: datetime, out: BatchSender
    ) -> None:
        engine, version = self._engine, self._engine.version
        key = facts.event_id.encode()
        for d in engine.decide(facts):
            rid = str(d.recipient)
            did: str | None = None
            if d.allowed:
                did = delivery_id(facts.event_id, d.recipient, version)
                if d.view in self._views.aggregate_views:
                    await out.add(self._topics.ntf_facts, self._ntf_fact(signal, facts, version),
                                  key)
                else:
                    envelope = {
                        "delivery_id": did,
                        "event_id": facts.event_id,
                        "recipient": rid,
                        "rule": d.rule,
                        "rules": list(d.rules),
                        "policy_version": version,
                        "routed_at": now,
                        "view": d.view,
                        "payload": self._views.render(d.view, signal),
                    }
                    await out.add(self._topics.delivery(d.recipient),
                                  self._codec.encode(DELIVERY, envelope), key)
                self.stats.deliveries[rid] += 1
            else:
                self.stats.denials[d.recipient.cls.value] += 1
            audit = {
                "event_id": facts.event_id,
                "agency": facts.agency,
                "recipient": rid,
                "outcome": "allow" if d.allowed else "deny",
                "rule": d.rule,
                "rules": list(d.rules),
                "policy_version": version,
                "delivery_id": did,
                "decided_at": now,
            }
            await out.add(self._topics.audit, self._codec.encode(ROUTING_DECISION, audit), key)
            self.stats.audits += 1
            self._decision_counter(d.recipient.cls.value, d.allowed).inc()
        self.stats.signals += 1
        self._metrics.signals_routed.labels(agency_label(facts.agency)).inc()

    def _decision_counter(self, cls_: str, allowed: bool) -> Any:
        child = self._counters.get((cls_, allowed))
        if child is None:
            child = self._counters[(cls_, allowed)] = self._metrics.decisions.labels(
                cls_, "allow" if allowed else "deny"
            )
        return child

    def _ntf_fact(self, signal: dict[str, Any], facts: Facts, version: str) -> bytes:
        occurred: datetime = signal["occurred_at"]
        return self._codec.encode(
            NTF_FACT,
            {
                "event_id": facts.event_id,
                "period": occurred.strftime("%Y-%m"),
                "arrondissement": facts.arrondissement,
                "phenomena": sorted(facts.phenomena),
                "policy_version": version,
            },
        )

    async def _dead_letter(
        self, rec: ConsumerRecord, reason: str, detail: str, out: BatchSender
    ) -> None:
        record = dead_letter_record(rec, reason, detail)
        await out.add(self._topics.dead_letter, self._codec.encode(DEAD_LETTER, record), rec.key)
        self.stats.dead_letters[reason] += 1
        self._metrics.dead_letters.labels(reason).inc()
        log.warning("router.dead_letter", reason=reason, topic=rec.topic,
                    partition=rec.partition, offset=rec.offset)
