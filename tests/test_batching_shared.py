"""Unit tests of SharedSender's group commit (pure coordination logic, a stand-in producer
whose batches are acknowledged or failed only when the test says so). The Kafka tests in
tests/test_sigtree_kafka.py cover the publisher on the real broker."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError

from planr.batching import SharedSender
from planr.errors import DeliveryError


class _Batch:
    def __init__(self, capacity: int) -> None:
        self.values: list[bytes] = []
        self.stamps: list[int | None] = []
        self.capacity = capacity

    def append(self, *, key: bytes | None, value: bytes, timestamp: int | None,
               headers: list[tuple[str, bytes]] | None = None) -> object | None:
        if len(self.values) == self.capacity:
            return None  # full
        self.values.append(value)
        self.stamps.append(timestamp)
        return object()

    def record_count(self) -> int:
        return len(self.values)


class StandInProducer:
    """Records each batch sent; its future is settled by the test."""

    def __init__(self, capacity: int = 1_000, refuse: int = 0) -> None:
        self.sent: list[tuple[list[bytes], asyncio.Future[Any]]] = []
        self.stamps: list[list[int | None]] = []  # per batch sent, each record's timestamp
        self.capacity = capacity  # records per batch
        self.refuse = refuse  # send_batch calls refused before one is taken
        self.slow_metadata = asyncio.Event()  # topic "slow": its partitions come when set

    async def partitions_for(self, topic: str) -> set[int]:
        if topic == "slow":
            await self.slow_metadata.wait()
        return {0}

    def create_batch(self) -> _Batch:
        return _Batch(self.capacity)

    async def send_batch(self, batch: _Batch, topic: str, *, partition: int) -> Any:
        if self.refuse:
            self.refuse -= 1
            raise KafkaTimeoutError
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.sent.append((batch.values, fut))
        self.stamps.append(batch.stamps)
        return fut


def _records(*values: bytes) -> list[tuple[str, bytes, bytes | None]]:
    return [("t", v, None) for v in values]


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def _two_calls_together(producer: StandInProducer
                              ) -> tuple[SharedSender, asyncio.Task[None], asyncio.Task[None]]:
    """Calls a and b, made together: one group, sent, not yet acknowledged."""
    out = SharedSender(producer)  # a stand-in producer
    a = asyncio.create_task(out.send(_records(b"a")))
    b = asyncio.create_task(out.send(_records(b"b")))
    await _settle()
    assert [values for values, _ in producer.sent] == [[b"a", b"b"]]
    return out, a, b


async def _next_call_goes_alone(out: SharedSender, producer: StandInProducer,
                                value: bytes) -> None:
    """A call made now is sent as a group of its own, and returns once that is acknowledged."""
    before = len(producer.sent)
    call = asyncio.create_task(out.send(_records(value)))
    await _settle()
    assert [values for values, _ in producer.sent[before:]] == [[value]]
    producer.sent[before][1].set_result(None)
    await asyncio.wait_for(call, timeout=5)


async def test_calls_made_while_a_group_is_acknowledged_go_together_in_the_next_group():
    producer = StandInProducer()
    out = SharedSender(producer)  # a stand-in producer
    a = asyncio.create_task(out.send(_records(b"a1", b"a2")))
    await _settle()
    assert [values for values, _ in producer.sent] == [[b"a1", b"a2"]]
    b = asyncio.create_task(out.send(_records(b"b1")))
    c = asyncio.create_task(out.send(_records(b"c1", b"c2")))
    await _settle()
    assert len(producer.sent) == 1  # nothing more leaves while the first group is unacked
    assert not a.done()
    producer.sent[0][1].set_result(None)
    await _settle()
    assert a.done()
    assert a.exception() is None
    assert not b.done()
    assert not c.done()
    assert [values for values, _ in producer.sent[1:]] == [[b"b1", b"c1", b"c2"]]
    producer.sent[1][1].set_result(None)
    await asyncio.wait_for(asyncio.gather(b, c), timeout=5)


async def test_every_caller_of_a_failed_group_gets_a_delivery_error_and_later_calls_go_on():
    producer = StandInProducer()
    out, a, b = await _two_calls_together(producer)
    producer.sent[0][1].set_exception(ConnectionError("broker gone"))
    for task in (a, b):
        with pytest.raises(DeliveryError):
            await asyncio.wait_for(task, timeout=5)
    await _next_call_goes_alone(out, producer, b"c")


async def test_a_cancelled_caller_does_not_hold_back_the_others_of_its_group():
    producer = StandInProducer()
    _, a, b = await _two_calls_together(producer)
    a.cancel()
    await _settle()
    assert a.cancelled()
    producer.sent[0][1].set_result(None)
    await asyncio.wait_for(b, timeout=5)
    assert [values for values, _ in producer.sent] == [[b"a", b"b"]]  # a's record went too


async def test_a_group_is_flushed_only_once_every_call_in_it_has_added_all_its_records():
    producer = StandInProducer()
    out = SharedSender(producer)  # a stand-in producer
    a = asyncio.create_task(out.send([("t", b"a1", None), ("slow", b"a2", None)]))
    await _settle()  # a waits for the partitions of "slow", half added
    b = asyncio.create_task(out.send(_records(b"b")))
    await _settle()  # b has added all of its records: the flush begins, and must wait for a
    assert producer.sent == []
    producer.slow_metadata.set()
    await _settle()
    assert sorted(values for values, _ in producer.sent) == [[b"a1", b"b"], [b"a2"]]
    for _, fut in producer.sent:
        fut.set_result(None)
    await asyncio.wait_for(asyncio.gather(a, b), timeout=5)


async def test_a_batch_the_producer_refuses_is_a_delivery_error_for_its_call_only():
    producer = StandInProducer(capacity=2, refuse=1)
    out = SharedSender(producer)  # a stand-in producer
    with pytest.raises(DeliveryError, match="KafkaTimeoutError"):
        await out.send(_records(b"a1", b"a2", b"a3"))  # a3 finds the batch full
    await _settle()
    # the full batch was kept and went with its group; a3 was never added
    assert [values for values, _ in producer.sent] == [[b"a1", b"a2"]]
    producer.sent[0][1].set_result(None)
    await _next_call_goes_alone(out, producer, b"b")


async def test_a_record_is_timestamped_when_its_call_is_made_not_when_its_group_leaves():
    producer = StandInProducer()
    out = SharedSender(producer)  # a stand-in producer
    a = asyncio.create_task(out.send(_records(b"a")))
    await _settle()
    before_b = time.time()
    b = asyncio.create_task(out.send(_records(b"b")))
    await _settle()
    after_b = time.time()
    await asyncio.sleep(0.2)  # b waits for a's group to be acknowledged
    producer.sent[0][1].set_result(None)
    await _settle()
    (stamp,) = producer.stamps[1]
    assert stamp is not None
    assert int(before_b * 1000) <= stamp <= int(after_b * 1000)
    producer.sent[1][1].set_result(None)
    await asyncio.wait_for(asyncio.gather(a, b), timeout=5)


async def test_drain_returns_only_once_the_flush_under_way_has_ended():
    producer = StandInProducer()
    out = SharedSender(producer)  # a stand-in producer
    a = asyncio.create_task(out.send(_records(b"a")))
    await _settle()
    drained = asyncio.create_task(out.drain())
    await _settle()
    assert not drained.done()
    producer.sent[0][1].set_result(None)
    await asyncio.wait_for(drained, timeout=5)
    assert a.done()
    await a
