"""The checking process (``check_process``, a real broker, SQLite and PostgreSQL): a store
consumer whose signatures are checked and records decoded in a process of its own must leave
exactly the tables, dead letters and offsets of the same records applied one record per batch
in the consumer's own process (the oracle: a second projector fed by hand); a checking process
that dies at a random moment fails the consumer with nothing of the batch written, and a
restart completes the same tables; stopping the consumer stops its process.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
from typing import Any

import pytest
from aiokafka import ConsumerRecord, TopicPartition

from consumers.checking import CheckWorkerError
from consumers.ftf.projector import Projector
from planr.domain import Agency
from planr.kafka import make_producer
from planr.signing import ROUTER, sign_chunk
from planr.topics import provision
from scenarios.ftf import tfl_delivery
from scenarios.keys import signed
from tests.test_projector_read_ahead import (
    BATCH,
    history,
    live_projector,
    stored_offset,
)
from tests.test_store_batching import FTF, projector, sig
from tests.test_store_helpers import dump

#: every record's CreateTime (a dead letter's ``failed_at`` is taken from it): the oracle's
#: records carry the same
AT_MS = 1_767_225_600_000

pytestmark = pytest.mark.kafka


def mixed(setup, keys, topic: str) -> list[tuple[bytes | None, list[tuple[str, bytes]]]]:
    """The read-ahead history signed by the router in chunks of 8, with four records to
    dead-letter among them: a delivery signed by an agency's key, a tombstone, a value that
    does not decode (signed by the router), and a delivery addressed to a local taskforce."""
    good = history(setup)
    out: list[tuple[bytes | None, list[tuple[str, bytes]]]] = []
    for i in range(0, len(good), 8):
        chunk = good[i : i + 8]
        out.extend(zip(chunk, sign_chunk(keys.signer(ROUTER), [(topic, v) for v in chunk]),
                       strict=True))
    stray = tfl_delivery(setup, sig(29, 1, Agency.VSSE))
    bad = [*signed(keys.signer(Agency.VSSE.value), topic, [good[0]]),
           (None, []),
           *signed(keys.signer(ROUTER), topic, [b"\x00not avro"]),
           *signed(keys.signer(ROUTER), topic, [stray])]
    for n, record in zip((17, 40, 77, 130), bad, strict=True):
        out.insert(n, record)
    return out


def key_of(value: bytes | None) -> bytes | None:
    """Kafka takes a tombstone only with a key."""
    return b"tombstone" if value is None else None


async def publish(conn, topic: str, items) -> None:
    """All to partition 0, in order."""
    producer = make_producer(conn)
    await producer.start()
    try:
        for offset, (value, headers) in enumerate(items):
            await producer.send(topic, key=key_of(value), value=value, partition=0,
                                headers=headers, timestamp_ms=AT_MS + offset)
        await producer.flush()
    finally:
        await producer.stop()


async def by_hand(ref, codec, keys, topic: str, items) -> Projector:
    """The oracle: each record handed to a projector checking in process, one per batch."""
    single, _ = projector(ref, codec, keys)
    for offset, (value, headers) in enumerate(items):
        key = key_of(value)
        rec = ConsumerRecord(topic, 0, offset, AT_MS + offset, 0, key, value, None,
                             len(key or b""), len(value or b""), headers)
        await single.process({TopicPartition(topic, 0): [rec]})
    return single


async def published(conn, topics, keys, setup) -> tuple[str, list[Any]]:
    topic = topics.delivery(FTF)
    await provision(conn, topics, [topic])
    items = mixed(setup, keys, topic)
    await publish(conn, topic, items)
    return topic, items


def worker_pid(p: Projector) -> int:
    assert p._worker is not None
    pid = p._worker.pid
    assert pid is not None
    assert pid != os.getpid()
    return pid


def checking(db, codec, keys, conn, topics) -> Projector:
    p = live_projector(db, codec, keys, conn, topics)
    p.read_ahead = None  # the default: on, since the checks run in their own process
    p._check_process = True
    return p


async def test_checking_in_a_process_gives_the_tables_of_one_record_per_batch_in_process(
    db, ref, codec, keys, routing_setup, conn, topics
):
    topic, items = await published(conn, topics, keys, routing_setup)
    live = checking(db, codec, keys, conn, topics)
    async with live:
        worker_pid(live)
        stats = await live.catch_up()
    assert stats.records == len(items)
    assert stats.bad == 4
    assert stats.ahead > 0  # batches checked in the process while the one before was written
    oracle = await by_hand(ref, codec, keys, topic, items)
    assert oracle.stats.bad == 4
    tables = await dump(db)
    assert tables == await dump(ref)
    assert sum(1 for row in tables["outbox"] if row[1] == "dead_letter") == 4
    assert await stored_offset(db, topic) == len(items)


async def test_a_checking_process_killed_at_a_random_moment_loses_and_repeats_nothing(
    db, ref, codec, keys, routing_setup, conn, topics
):
    topic, items = await published(conn, topics, keys, routing_setup)
    rng = random.Random()
    delay = rng.uniform(0.0, 0.2)  # the run takes ~0.2 s here: most kills land within it
    first = checking(db, codec, keys, conn, topics)
    failed: CheckWorkerError | None = None
    async with first:
        pid = worker_pid(first)

        async def kill() -> None:
            await asyncio.sleep(delay)
            os.kill(pid, signal.SIGKILL)

        killer = asyncio.ensure_future(kill())
        try:
            await first.catch_up()
        except CheckWorkerError as exc:
            failed = exc
        await killer
    stored = await stored_offset(db, topic)
    if failed is not None:  # nothing past the last committed batch was written
        assert failed.retriable
        assert stored is None or stored < len(items)
    again = checking(db, codec, keys, conn, topics)
    async with again:
        await again.catch_up()
    await by_hand(ref, codec, keys, topic, items)
    assert await dump(db) == await dump(ref), f"killed after {delay:.3f} s"
    assert await stored_offset(db, topic) == len(items)


async def test_stopping_the_consumer_stops_its_checking_process(db, codec, keys, conn, topics):
    await provision(conn, topics, [topics.delivery(FTF)])
    p = checking(db, codec, keys, conn, topics)
    async with p:
        pid = worker_pid(p)
        os.kill(pid, 0)  # alive
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert p._worker is None


async def test_the_checking_process_ignores_an_interrupt_meant_for_its_consumer(
    db, codec, keys, conn, topics, routing_setup
):
    _, items = await published(conn, topics, keys, routing_setup)
    p = checking(db, codec, keys, conn, topics)
    async with p:
        os.kill(worker_pid(p), signal.SIGINT)  # Ctrl-C reaches the whole process group
        os.kill(worker_pid(p), signal.SIGTERM)
        stats = await p.catch_up()  # the consumer drains: its checking process still runs
    assert stats.records == len(items)
    assert p.stats.batches >= len(items) // BATCH
