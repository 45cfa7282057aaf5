"""Everything one router batch writes: deliveries, retractions, audit records, NTF facts and
dead letters, encoded and added to the batch's :class:`~planr.batching.BatchSender` (which
signs them with the router's key). Statistics and metrics follow what was written."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from aiokafka import ConsumerRecord

from planr.batching import BatchSender
from planr.domain import Recipient, RecipientClass
from planr.telemetry import Metrics
from planr.topics import Topics
from routing.encoders import AuditEncoder, DeliveryEncoder
from routing.engine import Decision, Engine, Facts, agency_label
from routing.lifecycle import Holding
from routing.outputs import delivery_id, epoch_micros, retraction
from routing.views import Views
from schemas.codec import Codec
from schemas.dead_letter import dead_letter_record
from schemas.names import DEAD_LETTER, NTF_FACT, RETRACTION

log = structlog.get_logger(__name__)


@dataclass
class RouterStats:
    records: int = 0
    signals: int = 0
    deliveries: Counter[str] = field(default_factory=Counter)
    denials: Counter[str] = field(default_factory=Counter)
    retractions: Counter[str] = field(default_factory=Counter)
    audits: int = 0  # decisions audited (one entry per candidate)
    audit_records: int = 0  # audit records written (one per routed signal version)
    ntf_facts: int = 0  # NtfFacts written for the National Taskforce's statistics
    dead_letters: Counter[str] = field(default_factory=Counter)
    unchanged: Counter[str] = field(default_factory=Counter)  # duplicate, stale
    batches: int = 0


@dataclass(frozen=True)
class Encoders:
    """The router's record encoders, kept across batches (they remember repeated parts)."""

    audit: AuditEncoder
    delivery: DeliveryEncoder

    @classmethod
    def of(cls, codec: Codec) -> Encoders:
        return cls(AuditEncoder(codec), DeliveryEncoder(codec))


class Emitter:
    """The outputs of one batch. ``now`` is the batch's time (routed_at, decided_at).

    Metrics are counted here and applied once per batch, by :meth:`finish` (called once the
    batch's outputs are acknowledged)."""

    def __init__(self, out: BatchSender, *, topics: Topics, codec: Codec, views: Views,
                 engine: Engine, metrics: Metrics, stats: RouterStats, now: datetime,
                 counters: dict[tuple[str, bool], Any], encoders: Encoders,
                 dead_letters: bool = True) -> None:
        self.out, self.topics, self.codec, self.views = out, topics, codec, views
        self._encoders = encoders
        self.engine, self.metrics, self.stats, self.now = engine, metrics, stats, now
        self._stamp = epoch_micros(now)  # converted once for every record of the batch
        self._counters = counters
        self._write_dead_letters = dead_letters  # false: counted only (a re-evaluation)
        self._decided: Counter[tuple[RecipientClass, bool]] = Counter()
        self._denied: Counter[tuple[RecipientClass, str]] = Counter()
        self._allowed: Counter[tuple[RecipientClass, str]] = Counter()
        self._routed: Counter[str] = Counter()
        self._retracted: Counter[str] = Counter()
        self._dead: Counter[str] = Counter()
        self._topic_of: dict[str, str] = {}  # recipient id -> its delivery topic

    async def route(self, signal: Mapping[str, Any], facts: Facts, *,
                    skip: Iterable[str] = (), ntf: bool = True) -> dict[str, str]:
        """Decide every candidate of ``signal`` (a version of an event) and write its
        deliveries, NTF fact and its audit record (one per signal, listing every
        candidate's decision); recipients in ``skip`` already hold this very version and
        get nothing; ``ntf`` false writes no NTF fact (the NTF counts an event once).
        Returns the allowed recipients with their delivery ids (the aggregate recipient
        excluded). Each view is rendered once per signal, whoever shares it."""
        version = int(signal.get("version", 1))
        event_id = facts.event_id
        key = event_id.encode()
        allowed: dict[str, str] = {}
        unchanged = set(skip)
        decisions = self.engine.decide(facts)
        ids: list[str | None] = []
        bodies: dict[str, bytes] = {}  # per view: the encoded payload and version
        for d in decisions:
            cls_ = d.recipient.cls
            self._decided[cls_, d.allowed] += 1
            if not d.allowed:
                ids.append(None)
                self.stats.denials[cls_.value] += 1
                self._denied[cls_, d.rule] += 1
                continue
            self._allowed[cls_, d.rule] += 1
            did = delivery_id(event_id, d.recipient_id)
            ids.append(did)
            if d.view in self.views.aggregate_views:
                if ntf:
                    await self.out.add(self.topics.ntf_facts, self._ntf_fact(signal, facts), key)
                    self.stats.ntf_facts += 1
                continue
            allowed[d.recipient_id] = did
            if d.recipient_id not in unchanged:
                body = bodies.get(d.view)
                if body is None:
                    body = bodies[d.view] = self._encoders.delivery.body(
                        self.views.render(d.view, signal), version)
                await self._deliver(d, did, event_id=event_id, key=key, body=body)
        await self.out.add(self.topics.audit, self._encoders.audit.encode(
            decisions, ids, event_id=event_id, agency=facts.agency, version=version,
            policy_version=self.engine.version, decided_at=self._stamp), key)
        self.stats.audits += len(decisions)
        self.stats.audit_records += 1
        self.stats.signals += 1
        self._routed[agency_label(facts.agency)] += 1
        return allowed

    async def _deliver(self, d: Decision, did: str, *, event_id: str, key: bytes,
                       body: bytes) -> None:
        """The delivery of an allowed decision; ``body``: its view's payload and the version,
        encoded (:meth:`DeliveryEncoder.body`)."""
        value = self._encoders.delivery.encode(d, delivery=did, event_id=event_id,
                                               policy_version=self.engine.version,
                                               routed_at=self._stamp, body=body)
        topic = self._topic_of.get(d.recipient_id)
        if topic is None:
            topic = self._topic_of[d.recipient_id] = self.topics.delivery(d.recipient)
        await self.out.add(topic, value, key)
        self.stats.deliveries[d.recipient_id] += 1

    def finish(self) -> None:
        """Apply the batch's counts to the metrics, once (decisions by class and outcome,
        denials by class and deciding rule, signals routed, retractions, dead letters)."""
        for (cls_, ok), n in self._decided.items():
            self._decision_counter(cls_.value, ok).inc(n)
        for (cls_, rule), n in self._denied.items():
            self.metrics.denials.labels(cls_.value, rule).inc(n)
        for (cls_, rule), n in self._allowed.items():
            self.metrics.allowances.labels(cls_.value, rule).inc(n)
        for agency, n in self._routed.items():
            self.metrics.signals_routed.labels(agency).inc(n)
        for reason, n in self._retracted.items():
            self.metrics.retractions.labels(reason).inc(n)
        for reason, n in self._dead.items():
            self.metrics.dead_letters.labels(reason).inc(n)
        for tally in (self._decided, self._denied, self._allowed, self._routed, self._retracted,
                      self._dead):
            tally.clear()

    async def retract(self, holdings: Iterable[Holding], *, event_id: str, version: int,
                      reason: str) -> None:
        """Take back what each holding's recipient holds of an event."""
        key = event_id.encode()
        for h in holdings:
            record = retraction(delivery=h.delivery_id, event_id=event_id,
                                recipient=h.recipient, version=version, reason=reason,
                                policy_version=self.engine.version, at=self._stamp)
            await self.out.add(self.topics.delivery(Recipient.parse(h.recipient)),
                               self.codec.encode(RETRACTION, record), key)
            self.stats.retractions[reason] += 1
            self._retracted[reason] += 1

    async def dead_letter(self, rec: ConsumerRecord, reason: str, detail: str) -> None:
        self.stats.dead_letters[reason] += 1
        if not self._write_dead_letters:
            return
        record = dead_letter_record(rec, reason, detail)
        await self.out.add(self.topics.dead_letter, self.codec.encode(DEAD_LETTER, record),
                           record["original_key"])  # None when too large to copy
        self._dead[reason] += 1
        log.warning("router.dead_letter", reason=reason, topic=rec.topic,
                    partition=rec.partition, offset=rec.offset)

    def _decision_counter(self, cls_: str, allowed: bool) -> Any:
        child = self._counters.get((cls_, allowed))
        if child is None:
            child = self._counters[(cls_, allowed)] = self.metrics.decisions.labels(
                cls_, "allow" if allowed else "deny")
        return child

    def _ntf_fact(self, signal: Mapping[str, Any], facts: Facts) -> bytes:
        occurred: datetime = signal["occurred_at"]
        return self.codec.encode(NTF_FACT, {
            "event_id": facts.event_id,
            "period": f"{occurred.year:04d}-{occurred.month:02d}",  # strftime("%Y-%m")
            "arrondissement": facts.arrondissement,
            "phenomena": sorted(facts.phenomena),
            "policy_version": self.engine.version,
        })
