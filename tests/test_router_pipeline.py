"""Unit tests of the router's two-deep pipeline (stand-in Kafka clients whose batches are
acknowledged or failed when the test says so; the real ledger on SQLite, whose save the test
can hold back): the next batch is decided while the one before finishes, it sees that batch's
events before the ledger has them, and each commits only after its own acknowledgements and
after the batch before. The end-to-end tests run the same loop on the real broker.

Oracles: the offsets of the batches the test built, the delivery and retraction records the
router produced (decoded with the project's codec), and what the ledger holds."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka import ConsumerRecord, TopicPartition

from consumers.ledger import StoreLedger
from planr.domain import Agency
from planr.errors import DeliveryError
from planr.kafka import KafkaConnection
from planr.signing import PROJECTOR, ROUTER, sign_headers
from planr.telemetry import Metrics
from planr.topics import Topics
from routing.lifecycle import EventState
from routing.router import Router
from routing.setup import RoutingSetup
from scenarios.builders import make_signal
from scenarios.keys import KeyRing
from schemas.codec import Codec
from schemas.names import DELIVERY, FTF_REMOVAL, RETRACTION, SIGNAL, WITHDRAWAL


class _Batch:
    def __init__(self) -> None:
        self.values: list[bytes] = []

    def append(self, *, key: bytes | None, value: bytes, timestamp: int | None,
               headers: list[tuple[str, bytes]] | None = None) -> object:
        self.values.append(value)
        return object()

    def record_count(self) -> int:
        return len(self.values)


class StandInProducer:
    """Keeps every batch sent, in order; acknowledges each one when the test says so (or at
    once, with ``auto_ack``)."""

    def __init__(self, *, auto_ack: bool = False) -> None:
        self.sent: list[tuple[list[bytes], asyncio.Future[Any]]] = []
        self.auto_ack = auto_ack

    async def partitions_for(self, topic: str) -> set[int]:
        return {0}

    def create_batch(self) -> _Batch:
        return _Batch()

    async def send_batch(self, batch: _Batch, topic: str, *, partition: int) -> Any:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.auto_ack:
            fut.set_result(None)
        self.sent.append((batch.values, fut))
        return fut

    def ack(self, first: int = 0, end: int | None = None,
            error: Exception | None = None) -> None:
        for _, fut in self.sent[first:end]:
            if not fut.done():
                if error is None:
                    fut.set_result(None)
                else:
                    fut.set_exception(error)

    def records(self, codec: Codec, name: str, first: int = 0) -> list[dict[str, Any]]:
        return [codec.decode(v, name) for values, _ in self.sent[first:] for v in values
                if codec.writer_of(v).name == name]


class RecordingConsumer:
    """Records each commit, with how many of the batches sent until then were acknowledged."""

    def __init__(self, producer: StandInProducer) -> None:
        self.commits: list[dict[TopicPartition, int]] = []
        self.acked_at_commit: list[int] = []
        self._producer = producer

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.acked_at_commit.append(sum(f.done() and not f.exception()
                                        for _, f in self._producer.sent))
        self.commits.append(offsets)


class HeldLedger(StoreLedger):
    """The real ledger, whose saves wait until ``release`` is set."""

    def __init__(self, inner: StoreLedger) -> None:
        super().__init__(inner.db)
        self.release = asyncio.Event()

    async def save(self, states: Any, at: datetime) -> None:
        await self.release.wait()
        await super().save(states, at)


def _router(setup: RoutingSetup, topics: Topics, codec: Codec, metrics: Metrics,
            keys: KeyRing, ledger: StoreLedger, producer: StandInProducer
            ) -> tuple[Router, RecordingConsumer]:
    router = Router(conn=KafkaConnection("127.0.0.1:9"), topics=topics, engine=setup.engine,
                    views=setup.views, codec=codec, metrics=metrics, registry=keys.registry,
                    signer=keys.signer(ROUTER), ledger=ledger)
    consumer = RecordingConsumer(producer)
    router._producer = producer  # stand-ins: a unit test of the pipeline
    router._consumer = consumer
    return router, consumer


def _record(topic: str, offset: int, value: bytes, headers: list[tuple[str, bytes]]
            ) -> dict[TopicPartition, list[ConsumerRecord]]:
    rec = ConsumerRecord(topic, 0, offset, 0, 0, b"k", value, None, 1, len(value), headers)
    return {TopicPartition(topic, 0): [rec]}


def _signal(topics: Topics, codec: Codec, keys: KeyRing, offset: int, event_id: str,
            subject: str = "P-1") -> dict[TopicPartition, list[ConsumerRecord]]:
    topic = topics.ingress(Agency.VSSE)
    signal = make_signal(event_id=event_id, subject={"id": subject, "kind": "person",
                                                     "statuses": ["FTF"]})
    value = codec.encode(SIGNAL, signal.to_avro(Agency.VSSE))
    return _record(topic, offset, value, sign_headers(keys.signer(Agency.VSSE), topic, value))


def _withdrawal(topics: Topics, codec: Codec, keys: KeyRing, offset: int, event_id: str
                ) -> dict[TopicPartition, list[ConsumerRecord]]:
    topic = topics.ingress(Agency.VSSE)
    value = codec.encode(WITHDRAWAL, {"event_id": event_id, "agency": Agency.VSSE.value,
                                      "subject_id": "P-1", "version": 1,
                                      "withdrawn_at": datetime.now(UTC)})
    return _record(topic, offset, value, sign_headers(keys.signer(Agency.VSSE), topic, value))


def _removal(topics: Topics, codec: Codec, keys: KeyRing, subject: str
             ) -> dict[TopicPartition, list[ConsumerRecord]]:
    topic = topics.ftf_removals
    value = codec.encode(FTF_REMOVAL, {"removal_id": str(uuid.uuid4()), "subject_id": subject,
                                       "event_id": str(uuid.uuid4()),
                                       "removed_at": datetime.now(UTC), "decided_by": "ocam"})
    return _record(topic, 0, value, sign_headers(keys.signer(PROJECTOR), topic, value))


async def _until(condition: Any) -> None:
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the router did not get there")


E1 = "0e000000-0000-4000-8000-000000000001"
E2 = "0e000000-0000-4000-8000-000000000002"


async def test_the_next_batch_is_sent_while_the_one_before_waits_and_each_commits_in_turn(
    topics: Topics, routing_setup: RoutingSetup, codec: Codec, metrics: Metrics,
    keys: KeyRing, ledger: StoreLedger,
):
    producer = StandInProducer()
    router, consumer = _router(routing_setup, topics, codec, metrics, keys, ledger, producer)
    first, second = _signal(topics, codec, keys, 0, E1), _signal(topics, codec, keys, 1, E2)
    await router._dispatch(first)
    sent_first = len(producer.sent)
    assert sent_first > 0
    dispatching = asyncio.create_task(router._dispatch(second))
    await _until(lambda: len(producer.sent) > sent_first)  # sent before the first is acked
    assert {d["event_id"] for d in producer.records(codec, DELIVERY, sent_first)} == {E2}
    assert consumer.commits == []
    producer.ack(0, sent_first)
    await _until(lambda: consumer.commits)
    tp = TopicPartition(topics.ingress(Agency.VSSE), 0)
    assert consumer.commits == [{tp: 1}]
    await dispatching
    producer.ack(sent_first)
    await router._settle()
    assert consumer.commits == [{tp: 1}, {tp: 2}]
    # the first commit came once the first batch's outputs were acknowledged, the second
    # once every output was
    assert consumer.acked_at_commit[0] >= sent_first
    assert consumer.acked_at_commit[1] == len(producer.sent)
    assert set(await ledger.load([E1, E2])) == {E1, E2}


async def test_a_withdrawal_in_the_next_batch_retracts_what_the_batch_in_flight_delivered(
    topics: Topics, routing_setup: RoutingSetup, codec: Codec, metrics: Metrics,
    keys: KeyRing, ledger: StoreLedger,
):
    held = HeldLedger(ledger)
    producer = StandInProducer(auto_ack=True)
    router, consumer = _router(routing_setup, topics, codec, metrics, keys, held, producer)
    await router._dispatch(_signal(topics, codec, keys, 0, E1))
    delivered = {d["recipient"]: d["delivery_id"] for d in producer.records(codec, DELIVERY)}
    assert delivered
    sent_first = len(producer.sent)
    dispatching = asyncio.create_task(router._dispatch(_withdrawal(topics, codec, keys, 1, E1)))
    await _until(lambda: len(producer.sent) > sent_first)
    assert await ledger.load([E1]) == {}  # the first batch is not saved yet
    retracted = {r["recipient"]: r["delivery_id"]
                 for r in producer.records(codec, RETRACTION, sent_first)}
    assert retracted == delivered
    held.release.set()
    await dispatching
    await router._settle()
    assert len(consumer.commits) == 2
    state: EventState = (await ledger.load([E1]))[E1]
    assert state.withdrawn
    assert state.holders() == []


async def test_a_removal_in_the_next_batch_retracts_the_events_of_the_batch_in_flight(
    topics: Topics, routing_setup: RoutingSetup, codec: Codec, metrics: Metrics,
    keys: KeyRing, ledger: StoreLedger,
):
    held = HeldLedger(ledger)
    producer = StandInProducer(auto_ack=True)
    router, _ = _router(routing_setup, topics, codec, metrics, keys, held, producer)
    await router._dispatch(_signal(topics, codec, keys, 0, E1, subject="P-77"))
    delivered = {d["recipient"] for d in producer.records(codec, DELIVERY)}
    sent_first = len(producer.sent)
    dispatching = asyncio.create_task(router._dispatch(_removal(topics, codec, keys, "P-77")))
    await _until(lambda: len(producer.sent) > sent_first)
    assert await ledger.subject_events("P-77") == []  # the first batch is not saved yet
    retractions = producer.records(codec, RETRACTION, sent_first)
    assert {r["recipient"] for r in retractions} == delivered
    assert {(r["event_id"], r["reason"]) for r in retractions} == {(E1, "removed_from_database")}
    held.release.set()
    await dispatching
    await router._settle()


async def test_when_the_batch_in_flight_fails_the_next_one_is_neither_saved_nor_committed(
    topics: Topics, routing_setup: RoutingSetup, codec: Codec, metrics: Metrics,
    keys: KeyRing, ledger: StoreLedger,
):
    producer = StandInProducer()
    router, consumer = _router(routing_setup, topics, codec, metrics, keys, ledger, producer)
    await router._dispatch(_signal(topics, codec, keys, 0, E1))
    sent_first = len(producer.sent)
    dispatching = asyncio.create_task(router._dispatch(_signal(topics, codec, keys, 1, E2)))
    await _until(lambda: len(producer.sent) > sent_first)
    producer.ack(0, sent_first, ConnectionError("broker gone"))
    with pytest.raises(DeliveryError):
        await dispatching
    producer.ack(sent_first)  # the second batch's outputs were acknowledged: not enough
    await router._settle()
    assert consumer.commits == []
    assert await ledger.load([E1, E2]) == {}
