"""The routing consumer: ingress topics in, deliveries, retractions, audit and dead letters out.

For each batch of ingress records the router checks authenticity first (the record must be
signed by a registered, valid key of the agency that owns the ingress topic; see
:mod:`planr.signing`), decodes (a ``Signal`` or a ``Withdrawal``; the agency a record claims
must own the ingress topic too), validates (:mod:`routing.admission`), loads what its ledger
knows of the batch's events, decides what each record means for its event
(:mod:`routing.lifecycle`), decides every candidate recipient, produces every delivery,
retraction and audit record (:mod:`routing.emitter`), each signed with the router's own key,
waits until the broker has acknowledged all of them, saves the events' new states in the
ledger, and only then commits the batch's offsets (at-least-once on the wire; the ledger turns
a replay into duplicates, and sinks deduplicate by delivery id: effectively-once in every
projection). It also reads the common database's removals (signed by the projector), and
retracts every event about a removed person from every holder.

Batches are pipelined, two deep: while one batch waits for its acknowledgements, its ledger
save and its commit, the next one is decided and its outputs are sent behind the first one's.
The next batch takes the new states of the events of the one in flight from memory (a copy),
not from the ledger, which may not have them yet (a removal, too, finds the events of the
batch in flight); it is acknowledged, saved and committed only after the first one. If the
first one fails, the second is dropped unsaved and uncommitted, and both are read again
(their outputs then come again, with the same ids).

A record that cannot be processed goes to the dead-letter topic with a reason; the router
never dies on a bad record.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from planr.batching import BatchSender
from planr.errors import UsageError
from planr.identity import content_fingerprint
from planr.kafka import KafkaConnection, make_consumer, make_producer
from planr.loop import Batch, ConsumeLoop
from planr.signing import ROUTER, KeyRegistry, Signer
from planr.telemetry import Metrics
from planr.topics import Topics
from routing.admission import Admission, Admitted
from routing.emitter import Emitter, Encoders, RouterStats
from routing.engine import Engine
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

log = structlog.get_logger(__name__)

__all__ = ["Decided", "Router", "RouterStats"]

#: The codec of the router's record batches: zstd (level 3) costs about a third of the CPU of
#: aiokafka's lz4 (level 9) on the router's records and compresses them better
#: (docs/benchmarks.md).
PRODUCER_COMPRESSION = "zstd"
#: The router fills its own record batches (:class:`~planr.batching.BatchSender`), so the
#: producer has nothing to wait for: a linger would only delay each batch's acknowledgements
#: (about 6 ms per batch on the embedded broker; docs/benchmarks.md).
PRODUCER_LINGER_MS = 0


@dataclass
class Decided:
    """A batch decided, its outputs sent: to be acknowledged, saved, then committed."""

    batch: Batch
    emit: Emitter
    admitted: list[Admitted]
    changed: dict[str, EventState]  # the new states of its events
    now: datetime


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
        self._admission = Admission(registry=registry, topics=topics, codec=codec)
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
        self._in_flight: Decided | None = None  # dispatched, finishing (_finishing)
        self._finishing: asyncio.Task[None] | None = None
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
        await self._complete(await self._decide(batch))

    async def _dispatch(self, batch: Batch) -> None:
        """Decide ``batch`` (and send its outputs) while the batch before it finishes; then
        let this one finish in its turn (acknowledged, saved, committed)."""
        decided = await self._decide(batch)
        await self._settle()  # the batch before: finished, or its error raised here
        self._in_flight = decided
        self._finishing = asyncio.create_task(self._finish(decided))

    async def _finish(self, decided: Decided) -> None:
        await self._complete(decided)
        await self._commit_or_skip(decided.batch)

    async def _settle(self) -> None:
        task = self._finishing
        if task is not None:
            try:
                await task
            finally:
                self._finishing = self._in_flight = None

    async def _decide(self, batch: Batch) -> Decided:
        """Admit, decide and send every output of ``batch`` (none acknowledged yet)."""
        # The batch's wall-clock time, not the record timestamps: those are set by the
        # producer and not covered by the signature, so they cannot extend a key's validity.
        now = datetime.now(UTC)
        emit = Emitter(BatchSender(self._producer, signer=self._signer), topics=self._topics,
                       codec=self._codec, views=self._views, engine=self._engine,
                       metrics=self._metrics, stats=self.stats, now=now,
                       counters=self._counters, encoders=self._encoders,
                       dead_letters=not self._reapply)
        admitted = [a for recs in batch.values() for rec in recs
                    if (a := await self._admission.admit(rec, now, emit)) is not None]
        before = self._in_flight  # its new states may not be in the ledger yet
        ids = await self._events_of(admitted, before)
        states = await self._ledger.load(ids)
        if before is not None:  # a copy: the batch in flight saves its own objects
            states.update({i: copy.deepcopy(before.changed[i])
                           for i in ids & before.changed.keys()})
        changed: dict[str, EventState] = {}
        for a in admitted:
            await self._apply(a, states, changed, emit)
        await emit.out.send_all()  # in the producer's queues, ahead of the next batch's
        return Decided(batch, emit, admitted, changed, now)

    async def _complete(self, decided: Decided) -> None:
        """Wait for every acknowledgement of a decided batch, then save its states."""
        emit = decided.emit
        await emit.out.wait()  # DeliveryError: nothing saved or committed, batch redelivered
        emit.finish()  # the batch's metrics, once its outputs are acknowledged
        await self._ledger.save(list(decided.changed.values()), decided.now)
        acked = datetime.now(UTC)
        for a in decided.admitted:
            if a.kind == SIGNAL:
                published: datetime = a.record["published_at"]
                self._metrics.routing_latency.observe(max(0.0, (acked - published)
                                                          .total_seconds()))

    async def _events_of(self, admitted: list[Admitted], before: Decided | None) -> set[str]:
        """The events the batch touches: its own, and those of each removed subject (in the
        ledger, or in the batch ``before`` still in flight)."""
        ids = {a.event_id for a in admitted if a.kind != FTF_REMOVAL}
        for a in admitted:
            if a.kind == FTF_REMOVAL:
                subject = a.record["subject_id"]
                events = set(await self._ledger.subject_events(subject))
                if before is not None:
                    events.update(i for i, state in before.changed.items()
                                  if state.subject_id == subject)
                a.record["events"] = sorted(events)
                ids.update(events)
        return ids

    async def _commit(self, batch: Batch) -> None:
        """The commit rule: the next offset of every partition, once its outputs are acked."""
        await self._consumer.commit({tp: recs[-1].offset + 1 for tp, recs in batch.items()})
        count = sum(len(recs) for recs in batch.values())
        self.stats.records += count
        self.stats.batches += 1
        self._metrics.batch_size.observe(count)

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
