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
from planr.domain import Recipient
from planr.telemetry import Metrics
from planr.topics import Topics
from routing.engine import Decision, Engine, Facts, agency_label
from routing.lifecycle import Holding
from routing.outputs import audit, delivery_id, envelope, retraction
from routing.views import Views
from schemas.codec import Codec
from schemas.dead_letter import dead_letter_record
from schemas.names import DEAD_LETTER, DELIVERY, NTF_FACT, RETRACTION, ROUTING_DECISION

log = structlog.get_logger(__name__)


@dataclass
class RouterStats:
    records: int = 0
    signals: int = 0
    deliveries: Counter[str] = field(default_factory=Counter)
    denials: Counter[str] = field(default_factory=Counter)
    retractions: Counter[str] = field(default_factory=Counter)
    audits: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)
    unchanged: Counter[str] = field(default_factory=Counter)  # duplicate, stale
    batches: int = 0


class Emitter:
    """The outputs of one batch. ``now`` is the batch's time (routed_at, decided_at)."""

    def __init__(self, out: BatchSender, *, topics: Topics, codec: Codec, views: Views,
                 engine: Engine, metrics: Metrics, stats: RouterStats, now: datetime,
                 counters: dict[tuple[str, bool], Any], dead_letters: bool = True) -> None:
        self.out, self.topics, self.codec, self.views = out, topics, codec, views
        self.engine, self.metrics, self.stats, self.now = engine, metrics, stats, now
        self._counters = counters
        self._write_dead_letters = dead_letters  # false: counted only (a re-evaluation)

    async def route(self, signal: Mapping[str, Any], facts: Facts, *,
                    skip: Iterable[str] = (), ntf: bool = True) -> dict[str, str]:
        """Decide every candidate of ``signal`` (a version of an event) and write its
        deliveries, NTF fact and audit records; recipients in ``skip`` already hold this
        very version and get nothing; ``ntf`` false writes no NTF fact (the NTF counts an
        event once). Returns the allowed recipients with their delivery ids (the aggregate
        recipient excluded)."""
        version = int(signal.get("version", 1))
        key = facts.event_id.encode()
        allowed: dict[str, str] = {}
        unchanged = set(skip)
        for d in self.engine.decide(facts):
            rid = str(d.recipient)
            if d.allowed:
                await self._deliver(d, signal, facts, version, key,
                                    send=rid not in unchanged, ntf=ntf)
                if d.view not in self.views.aggregate_views:
                    allowed[rid] = delivery_id(facts.event_id, d.recipient)
            else:
                self.stats.denials[d.recipient.cls.value] += 1
            record = audit(d, event_id=facts.event_id, agency=facts.agency, version=version,
                           policy_version=self.engine.version, decided_at=self.now)
            await self.out.add(self.topics.audit, self.codec.encode(ROUTING_DECISION, record),
                               key)
            self.stats.audits += 1
            self._decision_counter(d.recipient.cls.value, d.allowed).inc()
        self.stats.signals += 1
        self.metrics.signals_routed.labels(agency_label(facts.agency)).inc()
        return allowed

    async def _deliver(self, d: Decision, signal: Mapping[str, Any], facts: Facts,
                       version: int, key: bytes, *, send: bool, ntf: bool) -> None:
        if d.view in self.views.aggregate_views:
            if ntf:
                await self.out.add(self.topics.ntf_facts, self._ntf_fact(signal, facts), key)
            return
        if not send:
            return
        record = envelope(d, event_id=facts.event_id, version=version,
                          policy_version=self.engine.version, routed_at=self.now,
                          payload=self.views.render(d.view, signal))
        await self.out.add(self.topics.delivery(d.recipient),
                           self.codec.encode(DELIVERY, record), key)
        self.stats.deliveries[str(d.recipient)] += 1

    async def retract(self, holdings: Iterable[Holding], *, event_id: str, version: int,
                      reason: str) -> None:
        """Take back what each holding's recipient holds of an event."""
        key = event_id.encode()
        for h in holdings:
            record = retraction(delivery=h.delivery_id, event_id=event_id,
                                recipient=h.recipient, version=version, reason=reason,
                                policy_version=self.engine.version, at=self.now)
            await self.out.add(self.topics.delivery(Recipient.parse(h.recipient)),
                               self.codec.encode(RETRACTION, record), key)
            self.stats.retractions[reason] += 1
            self.metrics.retractions.labels(reason).inc()

    async def dead_letter(self, rec: ConsumerRecord, reason: str, detail: str) -> None:
        self.stats.dead_letters[reason] += 1
        if not self._write_dead_letters:
            return
        record = dead_letter_record(rec, reason, detail)
        await self.out.add(self.topics.dead_letter, self.codec.encode(DEAD_LETTER, record),
                           record["original_key"])  # None when too large to copy
        self.metrics.dead_letters.labels(reason).inc()
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
            "period": occurred.strftime("%Y-%m"),
            "arrondissement": facts.arrondissement,
            "phenomena": sorted(facts.phenomena),
            "policy_version": self.engine.version,
        })
