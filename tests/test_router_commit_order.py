"""Unit test of the router's commit rule (pure logic, stand-in clients): no offset is
committed before every output of the batch is acknowledged. The end-to-end tests cover the
same path against the real broker when acknowledgements succeed."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import ConsumerRecord, TopicPartition

from consumers.ledger import StoreLedger
from planr.domain import Agency
from planr.errors import DeliveryError
from planr.kafka import KafkaConnection
from planr.signing import ROUTER, sign_headers
from planr.telemetry import Metrics
from planr.topics import Topics
from routing.router import Router
from routing.setup import RoutingSetup
from scenarios.builders import make_signal
from scenarios.keys import KeyRing
from schemas.codec import Codec
from schemas.names import SIGNAL


class _Batch:
    def __init__(self) -> None:
        self.n = 0

    def append(self, *, key: bytes | None, value: bytes, timestamp: int | None,
               headers: list[tuple[str, bytes]] | None = None) -> object:
        self.n += 1
        return object()

    def record_count(self) -> int:
        return self.n


class StandInProducer:
    """Acknowledges (or fails) each batch only when the test says so."""

    def __init__(self) -> None:
        self.futures: list[asyncio.Future[Any]] = []

    async def partitions_for(self, topic: str) -> set[int]:
        return {0}

    def create_batch(self) -> _Batch:
        return _Batch()

    async def send_batch(self, batch: _Batch, topic: str, *, partition: int) -> Any:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.futures.append(fut)
        return fut


class RecordingConsumer:
    def __init__(self, producer: StandInProducer) -> None:
        self.commits: list[dict[TopicPartition, int]] = []
        self.acked_at_commit: list[bool] = []
        self._producer = producer

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        futures = self._producer.futures
        self.acked_at_commit.append(
            bool(futures) and all(f.done() and not f.exception() for f in futures)
        )
        self.commits.append(offsets)


def _router(topics: Topics, setup: RoutingSetup, codec: Codec, metrics: Metrics,
            producer: StandInProducer, keys: KeyRing,
            ledger: StoreLedger) -> tuple[Router, RecordingConsumer]:
    router = Router(conn=KafkaConnection("127.0.0.1:9"), topics=topics, engine=setup.engine,
                    views=setup.views, codec=codec, metrics=metrics, registry=keys.registry,
                    signer=keys.signer(ROUTER), ledger=ledger)
    consumer = RecordingConsumer(producer)
    router._producer = producer  # stand-ins: a unit test of the commit rule
    router._consumer = consumer
    return router, consumer


def _batch(topics: Topics, codec: Codec,
           keys: KeyRing) -> dict[TopicPartition, list[ConsumerRecord]]:
    topic = topics.ingress(Agency.VSSE)
    value = codec.encode(SIGNAL, make_signal().to_avro(Agency.VSSE))
    headers = sign_headers(keys.signer(Agency.VSSE), topic, value)
    recs = [ConsumerRecord(topic, 0, offset, 0, 0, b"k", value, None, 1, len(value), headers)
            for offset in (7, 8)]
    return {TopicPartition(topic, 0): recs}


async def _settle(producer: StandInProducer, error: Exception | None) -> None:
    # The router reads its ledger first (a real wait), then produces the whole batch before
    # its next real wait (on the acks): settle them once they exist.
    for _ in range(3000):
        if producer.futures:
            break
        await asyncio.sleep(0.01)
    assert producer.futures, "the router waits for acknowledgements of produced batches"
    for f in producer.futures:
        if error is None:
            f.set_result(None)
        else:
            f.set_exception(error)


async def test_offsets_are_committed_only_after_every_output_is_acknowledged(
    topics: Topics, routing_setup: RoutingSetup, codec: Codec, metrics: Metrics, keys: KeyRing,
    ledger: StoreLedger,
):
    producer = StandInProducer()
    router, consumer = _router(topics, routing_setup, codec, metrics, producer, keys, ledger)
    batch = _batch(topics, codec, keys)
    await asyncio.gather(router.process(batch), _settle(producer, None))
    assert consumer.commits == [{TopicPartition(topics.ingress(Agency.VSSE), 0): 9}]
    assert consumer.acked_at_commit == [True]


async def test_a_failed_acknowledgement_commits_nothing(
    topics: Topics, routing_setup: RoutingSetup, codec: Codec, metrics: Metrics, keys: KeyRing,
    ledger: StoreLedger,
):
    producer = StandInProducer()
    router, consumer = _router(topics, routing_setup, codec, metrics, producer, keys, ledger)
    with pytest.raises(DeliveryError) as info:
        await asyncio.gather(router.process(_batch(topics, codec, keys)),
                             _settle(producer, ConnectionError("broker gone")))
    assert info.value.retriable
    assert consumer.commits == []
