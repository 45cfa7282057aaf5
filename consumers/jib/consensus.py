"""The JIB's consensus process: ``<p>.jib.submissions`` in; decisions, deliveries and audit
records out (through the outbox); the JIB's store kept up to date.

Effectively-once, as the common-database projector: each batch's changes, its outbox rows
and its next input offsets are written in one database transaction (:mod:`consumers.tracked`),
so a SIGKILL at any point loses nothing and decides nothing twice. The decisions are a pure
function of the input stream (:mod:`consumers.jib.rules`): the order of one topic partition,
the times carried by signed records, the panels file and the policy.

Every record is decoded, its signature checked against the key registry (the key must belong
to its author, and be valid at the time the record states), and its fields checked
(:mod:`schemas.jib`) before it is taken; a record that fails goes to the dead-letter topic
(``unauthenticated``, ``invalid_proposal``, ...). Grounds and reasons are never logged.

The clock: a signed ``JibTick`` in the input expires the open proposals whose deadline it has
reached. With a signer and a ``tick_interval``, the process writes such a tick itself when the
wall clock has passed the earliest open deadline; the tick, not the wall clock, decides.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from aiokafka import ConsumerRecord
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from consumers.checking import Check, Checked, Item
from consumers.jib.panels import Panels
from consumers.jib.rules import COUNTED, Decision, Proposal, open_proposal, take_tick, take_vote
from consumers.jib.store import BatchState, count_open
from consumers.jib.tables import jib_clock, jib_proposals
from consumers.metrics import StoreMetrics
from consumers.outbox import (
    JIB_AUDIT_KIND,
    JIB_DECISION_KIND,
    JIB_DELIVERY_KIND,
    Outbox,
    outbox_row,
)
from consumers.store import Database
from consumers.tracked import TrackedConsumer
from planr.errors import DecodeError, PlanrError
from planr.identity import content_fingerprint
from planr.kafka import KafkaConnection
from planr.loop import Batch
from planr.signing import KeyRegistry, Signer, verify_record
from planr.topics import Topics
from producers.jib import JibSubmitter, author_of
from routing.jib import JibRouting, Message
from schemas.codec import Codec
from schemas.jib import check_proposal, check_tick, check_vote
from schemas.names import JIB_AUDIT, JIB_DECISION, JIB_DELIVERY, JIB_PROPOSAL, JIB_TICK, JIB_VOTE

log = structlog.get_logger(__name__)

JIB_CONSENSUS = "jib-consensus"
OUTPUT_NS = uuid.UUID("0b7e3c4a-1f2d-4e5b-8a6c-9d0e1f2a3b4c")
#: An open proposal due within this time counts in ``planr_jib_proposals_expiring``.
EXPIRING_WITHIN = timedelta(hours=24)
_CHECKS = {JIB_PROPOSAL: check_proposal, JIB_VOTE: check_vote, JIB_TICK: check_tick}


def checked_later(items: Sequence[Item]) -> Checked:
    """The consensus service's record check: none here (see
    :meth:`JibConsensus.record_check`); nothing is decoded yet."""
    return [None] * len(items), 0.0


def output_id(*parts: str) -> str:
    return str(uuid.uuid5(OUTPUT_NS, "|".join(parts)))


@dataclass(frozen=True)
class Taken:
    rec: ConsumerRecord
    name: str
    record: dict[str, Any]
    fingerprint: str


class JibConsensus(TrackedConsumer):
    """Consume ``<p>.jib.submissions`` into the JIB's store. ``start()``/``stop()``."""

    def __init__(
        self,
        *,
        conn: KafkaConnection,
        db: Database,
        topics: Topics,
        codec: Codec,
        metrics: StoreMetrics,
        registry: KeyRegistry,
        panels: Panels,
        routing: JibRouting,
        outbox: Outbox | None = None,
        signer: Signer | None = None,
        tick_interval: float | None = None,
        max_batch: int = 500,
    ) -> None:
        super().__init__(name=JIB_CONSENSUS, conn=conn, db=db, codec=codec, metrics=metrics,
                         topics=[topics.jib_submissions], registry=registry, outbox=outbox,
                         max_batch=max_batch)
        self._registry = registry
        self._panels = panels
        self._routing = routing
        self._signer = signer
        self._tick_interval = tick_interval
        self._ticked_at = 0.0
        self._gauge_at = 0.0
        self._submitter = JibSubmitter(conn=conn, topics=topics, codec=codec)
        self.decisions = 0

    async def _close(self) -> None:
        await self._submitter.stop()
        await super()._close()

    # ---- taking records -------------------------------------------------------------------

    def record_check(self) -> Check:
        """Every record reaches :meth:`handle`: its signer depends on what it is (the proposer,
        the voting service, ``jib``), so :meth:`_take` checks it once the record is decoded."""
        return checked_later

    def _take(self, rec: ConsumerRecord, now: datetime) -> Taken:
        if rec.value is None:
            raise DecodeError("record has no value", reason="undecodable")
        name = self._codec.writer_of(rec.value).name
        if name not in _CHECKS:
            raise DecodeError(f"message carries a {name}, not a JIB submission",
                              reason="wrong_schema")
        record = self._codec.decode(rec.value, name)
        verify_record(self._registry, rec.topic, rec.value, rec.headers, at=now,
                      expected_owner=author_of(name, record))
        _CHECKS[name](record)
        return Taken(rec, name, record, content_fingerprint(record))

    def _decode(self, batch: Batch, out: list[dict[str, Any]]) -> list[Taken]:
        items = []
        now = datetime.now(UTC)  # keys are checked when read, as everywhere on the bus
        for records in batch.values():
            for rec in records:
                try:
                    items.append(self._take(rec, now))
                except PlanrError as exc:
                    detail = getattr(exc, "detail", None) or str(exc)
                    self.dead_letter(out, rec, exc.reason, str(detail))
        return items

    async def handle(self, conn: AsyncConnection, batch: Batch) -> None:
        out: list[dict[str, Any]] = []
        items = self._decode(batch, out)
        state = BatchState(self._db, conn, ((t.rec.topic, t.rec.partition) for t in items))
        ticks: dict[tuple[str, int], datetime] = {}
        for t in items:
            if t.name == JIB_TICK:
                key = (t.rec.topic, t.rec.partition)
                ticks[key] = max(t.record["at"], ticks.get(key, t.record["at"]))
        await state.load((t.record["proposal_id"] for t in items if t.name != JIB_TICK),
                         (t.record["vote_id"] for t in items if t.name == JIB_VOTE), ticks)
        for item in items:
            if item.name == JIB_PROPOSAL:
                self._proposal(state, item, out)
            elif item.name == JIB_VOTE:
                self._vote(state, item, out)
            else:
                self._clock(state, item, out)
        await state.save(out)

    def _proposal(self, state: BatchState, item: Taken, out: list[dict[str, Any]]) -> None:
        record, rec = item.record, item.rec
        pid = record["proposal_id"]
        if pid in state.proposal_hashes:
            self._repeated(out, rec, state.proposal_hashes[pid], item.fingerprint)
            return
        panel = self._panels.of(record["arrondissement"])
        p, decision = open_proposal(record, panel, state.clock(rec.topic, rec.partition))
        state.add_proposal(p, grounds=record["grounds"], partition=rec.partition,
                           offset=rec.offset, content_hash=item.fingerprint)
        self._metrics.jib_proposals.labels(p.action).inc()
        log.debug("jib.proposal", proposal_id=pid, proposer=p.proposer,
                  arrondissement=p.arrondissement, action=p.action)
        self._route(out, "proposal", p, rec.value, at=p.proposed_at)
        if decision is not None:
            self._decided(state, decision, out)

    def _vote(self, state: BatchState, item: Taken, out: list[dict[str, Any]]) -> None:
        vote, rec = item.record, item.rec
        if vote["vote_id"] in state.vote_hashes:
            self._repeated(out, rec, state.vote_hashes[vote["vote_id"]], item.fingerprint)
            return
        p = state.proposals.get(vote["proposal_id"])
        status, decision = take_vote(p, vote)
        state.add_vote(vote, status, offset=rec.offset, content_hash=item.fingerprint,
                       counted=status == COUNTED)
        self._metrics.jib_votes.labels(status).inc()
        if status != COUNTED:
            log.debug("jib.vote_refused", vote_id=vote["vote_id"],
                      proposal_id=vote["proposal_id"], service=vote["service"], reason=status)
            out.append(self._audit(
                output_id("vote_refused", vote["vote_id"]), vote["cast_at"], "vote_refused",
                party=vote["service"], p=p, outcome=status, detail=f"choice={vote['choice']}",
                proposal_id=vote["proposal_id"]))
        elif p is not None:
            state.changed(p)
        if decision is not None:
            self._decided(state, decision, out)

    def _clock(self, state: BatchState, item: Taken, out: list[dict[str, Any]]) -> None:
        rec = item.rec
        clock = state.advance_clock(rec.topic, rec.partition, item.record["at"])
        for decision in take_tick(state.open_due(rec.partition, clock), clock):
            self._decided(state, decision, out)

    # ---- outputs --------------------------------------------------------------------------

    def _decided(self, state: BatchState, d: Decision, out: list[dict[str, Any]]) -> None:
        p = d.proposal
        state.add_decision(d)
        value = self._codec.encode(JIB_DECISION, d.record())
        out.append(outbox_row(d.decision_id, JIB_DECISION_KIND, p.proposal_id, value,
                              d.decided_at))
        self._route(out, "decision", p, value, at=d.decided_at, outcome=d.outcome)
        self.decisions += 1
        self._metrics.jib_decisions.labels(d.outcome).inc()
        log.debug("jib.decision", proposal_id=p.proposal_id, outcome=d.outcome)

    def _route(self, out: list[dict[str, Any]], message: Message, p: Proposal, payload: bytes,
               *, at: datetime, outcome: str | None = None) -> None:
        """Deliver ``payload`` to every candidate the policy allows; audit every decision."""
        version = self._routing.version
        for route in self._routing.decide(message, proposer=p.proposer, panel=p.panel,
                                          action=p.action, outcome=outcome):
            key = (message, p.proposal_id, route.recipient, version)
            if route.allowed:
                delivery_id = output_id(*key)
                delivery = {"delivery_id": delivery_id, "recipient": route.recipient,
                            "message": message, "proposal_id": p.proposal_id,
                            "rule": route.rule, "rules": list(route.rules),
                            "policy_version": version, "routed_at": at, "payload": payload}
                out.append(outbox_row(delivery_id, JIB_DELIVERY_KIND,
                                      route.recipient,
                                      self._codec.encode(JIB_DELIVERY, delivery), at))
            out.append(self._audit(
                output_id("routed", *key), at, "routed", party=route.recipient, p=p,
                outcome="allow" if route.allowed else "deny", detail=f"message={message}",
                rules=route.rules, policy_version=version))

    def _audit(self, audit_id: str, at: datetime, action: str, *, party: str,
               p: Proposal | None, outcome: str, detail: str, proposal_id: str | None = None,
               rules: tuple[str, ...] = (), policy_version: str | None = None
               ) -> dict[str, Any]:
        pid = p.proposal_id if p is not None else proposal_id
        record: Mapping[str, Any] = {
            "audit_id": audit_id, "at": at, "action": action, "party": party,
            "proposal_id": pid,
            "subject_id": p.subject_id if p is not None else None, "outcome": outcome,
            "detail": detail, "rules": list(rules), "policy_version": policy_version}
        return outbox_row(audit_id, JIB_AUDIT_KIND, pid or "",
                          self._codec.encode(JIB_AUDIT, record), at)

    # ---- the clock ------------------------------------------------------------------------

    async def after_commit(self) -> None:
        """Publish the outbox; every few seconds, count the open proposals and those about to
        expire."""
        await super().after_commit()
        if time.monotonic() - self._gauge_at >= 5.0:
            self._gauge_at = time.monotonic()
            n_open, expiring = await count_open(self._db, datetime.now(UTC) + EXPIRING_WITHIN)
            self._metrics.jib_open.set(n_open)
            self._metrics.jib_expiring.set(expiring)

    async def _tick(self) -> None:
        """Write a tick when the wall clock has passed the earliest open deadline."""
        if self._signer is None or not self._tick_interval:
            return
        if time.monotonic() - self._ticked_at < self._tick_interval:
            return
        self._ticked_at = time.monotonic()
        now = datetime.now(UTC)
        due = await earliest_open_deadline(self._db)
        if due is not None and due <= now:
            await self._submitter.start()
            await self._submitter.tick(self._signer, now)
            log.info("jib.tick", at=now.isoformat())


async def earliest_open_deadline(db: Database) -> datetime | None:
    """The earliest deadline of an open proposal that the JIB's clock has not reached."""
    t = jib_proposals.c
    async with db.engine.connect() as conn:
        clock = await conn.scalar(select(func.max(jib_clock.c.at)))
        query = select(func.min(t.deadline)).where(t.outcome.is_(None))
        if clock is not None:
            query = query.where(t.deadline > clock)
        due: datetime | None = await conn.scalar(query)
    return due
