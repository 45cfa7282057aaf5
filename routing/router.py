"""The routing consumer: ingress topics in, deliveries, retractions, audit and dead letters out.

For each batch of ingress records the router checks authenticity first (the record must be
signed by a registered, valid key of the agency that owns the ingress topic; see
:mod:`planr.signing`), decodes (a ``Signal`` or a ``Withdrawal``; the agency a record claims
must own the ingress topic too), validates, loads what its ledger knows of the batch's events,
decides what each record means for its event (:mod:`routing.lifecycle`), decides every
candidate recipient, produces every delivery, retraction and audit record
(:mod:`routing.emitter`), each signed with the router's own key, waits until the broker has
acknowledged all of them, saves the events' new states in the ledger, and only then commits the
batch's offsets (at-least-once on the wire; the ledger turns a replay into duplicates, and sinks
deduplicate by delivery id: effectively-once in every projection). It also reads the common
database's removals (signed by the projector), and retracts every event about a removed person
from every holder.

A record that cannot be processed goes to the dead-letter topic with a reason; the router
never dies on a bad record.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord

from planr.batching import BatchSender
from planr.errors import InvalidSignalError, PlanrError, UsageError
from planr.identity import content_fingerprint
from planr.kafka import KafkaConnection, make_consumer, make_producer
from planr.loop import Batch, ConsumeLoop
from planr.signing import PROJECTOR, ROUTER, KeyRegistry, SignatureError, Signer, verify_record
from planr.telemetry import Metrics
from planr.topics import Topics
from routing.emitter import Emitter, Encoders, RouterStats
from routing.engine import Engine, Facts
from routing.lifecycle import (
    EventState,
    Holding,
    Ledger,
    Markings,
    RetractionReason,
    Verdict,
    after_routing,
    after_withdrawal,
    judge_signal,
    judge_withdrawal,
)
from routing.views import Views
from schemas.codec import Codec
from schemas.names import FTF_REMOVAL, SIGNAL, WITHDRAWAL
from schemas.validation import validate_signal_record, validate_withdrawal_record

log = structlog.get_logger(__name__)

__all__ = ["Router", "RouterStats"]

#: The codec of the router's record batches: zstd (level 3) costs about a third of the CPU of
#: aiokafka's lz4 (level 9) on the router's records and compresses them better
#: (docs/benchmarks.md).
PRODUCER_COMPRESSION = "zstd"
#: The router fills its own record batches (:class:`~planr.batching.BatchSender`), so the
#: producer has nothing to wait for: a linger would only delay each batch's acknowledgements
#: (about 6 ms per batch on the embedded broker; docs/benchmarks.md).
PRODUCER_LINGER_MS = 0


@dataclass
class Admitted:
    """A record that passed authentication, decoding and validation."""

    rec: ConsumerRecord
    kind: str  # SIGNAL, WITHDRAWAL or FTF_REMOVAL
    record: dict[str, Any]
    facts: Facts | None = None

    @property
    def event_id(self) -> str:
        return str(self.record["event_id"])


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
        ledger: Ledger,
        group_id: str = "planr-router",
        ingress: Iterable[str] | None = None,
        max_batch: int = 2000,
        reapply: bool = False,
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
        self._ledger = ledger
        #: ``planr policy apply``: decide again what was routed (see :meth:`_reapply_policy`)
        self._reapply = reapply
        self._ingress = list(ingress) if ingress is not None else topics.all_ingress()
        self._inputs = [*self._ingress, topics.ftf_removals]
        self._conn = conn
        self._group_id = group_id
        self._max_batch = max_batch
        super().__init__()
        # Clients are created in start(): an object never started holds no sockets.
        self._consumer: AIOKafkaConsumer
        self._producer: AIOKafkaProducer
        self.stats = RouterStats()
        self._counters: dict[tuple[str, bool], Any] = {}
        self._encoders = Encoders.of(codec)
        metrics.policy_info.labels(engine.version).set(1)

    async def _open(self) -> None:
        self._producer = make_producer(self._conn, compression=PRODUCER_COMPRESSION,
                                       linger_ms=PRODUCER_LINGER_MS)
        self._consumer = make_consumer(self._conn, *self._inputs, group_id=self._group_id,
                                       max_records=self._max_batch)
        try:  # a failed start stops both clients (start() retries with fresh ones)
            await self._producer.start()
            await self._consumer.start()
        except BaseException:
            try:
                await self._consumer.stop()
            finally:
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
        """Decide and produce every output of the batch, wait for every acknowledgement, save
        the ledger; return only then (the commit follows)."""
        # The batch's wall-clock time, not the record timestamps: those are set by the
        # producer and not covered by the signature, so they cannot extend a key's validity.
        now = datetime.now(UTC)
        emit = Emitter(BatchSender(self._producer, signer=self._signer), topics=self._topics,
                       codec=self._codec, views=self._views, engine=self._engine,
                       metrics=self._metrics, stats=self.stats, now=now,
                       counters=self._counters, encoders=self._encoders,
                       dead_letters=not self._reapply)
        admitted = [a for recs in batch.values() for rec in recs
                    if (a := await self._admit(rec, now, emit)) is not None]
        states = await self._ledger.load(await self._events_of(admitted))
        changed: dict[str, EventState] = {}
        for a in admitted:
            await self._apply(a, states, changed, emit)
        await emit.out.flush()  # DeliveryError: nothing saved or committed, batch redelivered
        emit.finish()  # the batch's metrics, once its outputs are acknowledged
        await self._ledger.save(list(changed.values()), now)
        acked = datetime.now(UTC)
        for a in admitted:
            if a.kind == SIGNAL:
                published: datetime = a.record["published_at"]
                self._metrics.routing_latency.observe(max(0.0, (acked - published)
                                                          .total_seconds()))

    async def _events_of(self, admitted: list[Admitted]) -> set[str]:
        ids = {a.event_id for a in admitted if a.kind != FTF_REMOVAL}
        for a in admitted:
            if a.kind == FTF_REMOVAL:
                a.record["events"] = await self._ledger.subject_events(a.record["subject_id"])
                ids.update(a.record["events"])
        return ids

    async def _commit(self, batch: Batch) -> None:
        """The commit rule: the next offset of every partition, once its outputs are acked."""
        await self._consumer.commit({tp: recs[-1].offset + 1 for tp, recs in batch.items()})
        count = sum(len(recs) for recs in batch.values())
        self.stats.records += count
        self.stats.batches += 1
        self._metrics.batch_size.observe(count)

    async def _authentic(self, rec: ConsumerRecord, now: datetime, emit: Emitter) -> bool:
        """Whether ``rec`` is signed by the owner of its topic (the agency of an ingress topic,
        the projector for removals); if not, it is dead-lettered (``unauthenticated``, the
        sub-reason and key id) and never decoded."""
        agency = self._topics.agency_of_ingress(rec.topic)
        owner = PROJECTOR if rec.topic == self._topics.ftf_removals else (
            agency.value if agency is not None else None)
        if owner is None:
            await emit.dead_letter(rec, "agency_mismatch", "not an ingress topic")
            return False
        if rec.value is None:
            await emit.dead_letter(rec, "undecodable", "record has no value (tombstone)")
            return False
        try:
            verify_record(self._registry, rec.topic, rec.value, rec.headers, at=now,
                          expected_owner=owner)
        except SignatureError as exc:
            log.warning("router.unauthenticated", topic=rec.topic, partition=rec.partition,
                        offset=rec.offset, detail_reason=exc.detail_reason, key_id=exc.key_id)
            await emit.dead_letter(rec, exc.reason, exc.detail)
            return False
        return True

    async def _admit(self, rec: ConsumerRecord, now: datetime,
                     emit: Emitter) -> Admitted | None:
        """Check and decode one record; a bad one is dead-lettered and ``None`` returned."""
        if not await self._authentic(rec, now, emit):
            return None
        try:
            if rec.topic == self._topics.ftf_removals:
                return Admitted(rec, FTF_REMOVAL, self._codec.decode(rec.value, FTF_REMOVAL))
            kind = self._ingress_kind(rec)
            record = self._codec.decode(rec.value, kind)
            expected = self._topics.agency_of_ingress(rec.topic)
            if expected is None or record["agency"] != expected.value:
                await emit.dead_letter(rec, "agency_mismatch",
                                       "claimed agency does not own this ingress topic")
                return None
            if kind == WITHDRAWAL:
                return Admitted(rec, kind, validate_withdrawal_record(record))
            validate_signal_record(record, now=now)
            return Admitted(rec, kind, record, Facts.of(record))
        except InvalidSignalError as exc:  # the field path, never the value
            await emit.dead_letter(rec, exc.reason, exc.field or str(exc))
        except PlanrError as exc:
            await emit.dead_letter(rec, exc.reason, str(exc))
        except (KeyError, TypeError, ValueError) as exc:
            await emit.dead_letter(rec, "invalid_signal", type(exc).__name__)
        return None

    def _ingress_kind(self, rec: ConsumerRecord) -> str:
        kind: str = self._codec.writer_of(rec.value).name
        if kind not in (SIGNAL, WITHDRAWAL):
            raise InvalidSignalError(f"a {kind} has no place on an ingress topic",
                                     reason="unexpected_record")
        return kind

    async def _apply(self, a: Admitted, states: dict[str, EventState],
                     changed: dict[str, EventState], emit: Emitter) -> None:
        if a.kind == FTF_REMOVAL:
            await self._removed(a, states, changed, emit)
            return
        state = states.get(a.event_id)
        agency, version = a.record["agency"], int(a.record["version"])
        if a.kind == WITHDRAWAL:
            judged = judge_withdrawal(state, agency, version)
        else:
            fingerprint = content_fingerprint(a.record)
            markings = Markings.of(a.record)
            judged = judge_signal(state, agency, version, fingerprint, markings)
        if judged.verdict in (Verdict.CONFLICT, Verdict.LOOSENED):
            await emit.dead_letter(a.rec, judged.verdict.value, judged.detail)
            return
        if judged.verdict is Verdict.DUPLICATE and self._reapply and state is not None:
            await self._reapply_policy(a, state, changed, emit)
            return
        if judged.verdict in (Verdict.DUPLICATE, Verdict.STALE):
            self.stats.unchanged[judged.verdict.value] += 1
            return
        if judged.verdict is Verdict.WITHDRAW:
            new, gone = after_withdrawal(state, event_id=a.event_id, agency=agency,
                                         version=version)
            await emit.retract(gone, event_id=a.event_id, version=new.version,
                               reason=RetractionReason.WITHDRAWN.value)
        else:
            assert a.facts is not None
            # the NTF counts an event once: its first routed version
            allowed = await emit.route(a.record, a.facts, ntf=state is None)
            new, gone = after_routing(state, event_id=a.event_id, agency=agency,
                                      subject_id=a.record["subject"]["id"], version=version,
                                      fingerprint=fingerprint, markings=markings,
                                      allowed=allowed)
            await emit.retract(gone, event_id=a.event_id, version=version,
                               reason=RetractionReason.NOT_ENTITLED.value)
        states[a.event_id] = changed[a.event_id] = new

    async def _reapply_policy(self, a: Admitted, state: EventState,
                              changed: dict[str, EventState], emit: Emitter) -> None:
        """``planr policy apply``: the version already routed, decided again under this
        router's policy: newly entitled recipients receive it, recipients no longer entitled
        get a retraction, unchanged ones get nothing."""
        assert a.facts is not None
        held = {h.recipient for h in state.holders()}
        allowed = await emit.route(a.record, a.facts, skip=held, ntf=False)
        gone = [h for h in state.holders() if h.recipient not in allowed]
        for h in gone:
            h.active = False
        for recipient, did in allowed.items():
            if recipient not in held:
                state.holdings[recipient] = Holding(recipient, did, state.version)
        await emit.retract(gone, event_id=a.event_id, version=state.version,
                           reason=RetractionReason.NOT_ENTITLED.value)
        if gone or set(allowed) - held:
            changed[a.event_id] = state
        else:
            self.stats.unchanged["unchanged"] += 1

    async def _removed(self, a: Admitted, states: dict[str, EventState],
                       changed: dict[str, EventState], emit: Emitter) -> None:
        """OCAM removed a person from the common database: every recipient holding data about
        that person gets a retraction of those events."""
        for event_id in a.record.get("events", ()):
            state = states.get(event_id)
            if state is None or state.subject_id != a.record["subject_id"]:
                continue
            gone = state.holders()
            for h in gone:
                h.active = False
            state.withdrawn = True  # closed: neither a correction nor a new policy revives it
            await emit.retract(gone, event_id=event_id, version=state.version,
                               reason=RetractionReason.REMOVED.value)
            changed[event_id] = state
