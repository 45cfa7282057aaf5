"""Reading ahead (SQLite and PostgreSQL, a real broker): while one batch is written, the
projector reads and prepares the next one. The tables must be exactly those of the same
records applied one record per batch (the oracle: a second projector fed by hand), the
offsets stored must cover exactly the records applied, and a batch read ahead when a stop is
requested is applied and committed before the loop ends, never lost nor applied twice.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from sqlalchemy import select

from consumers.ftf.projector import Projector
from consumers.store.tables import consumer_offsets
from planr.domain import Recipient, RecipientClass
from planr.kafka import KafkaConnection, make_producer
from planr.signing import ROUTER, sign_chunk
from planr.topics import Topics, provision
from routing.setup import RoutingSetup
from scenarios.ftf import ftf_delivery, ftf_history
from scenarios.keys import KeyRing
from tests.test_event_identity import Stream
from tests.test_store_batching import FTF, projector, values
from tests.test_store_helpers import dump

pytestmark = pytest.mark.kafka

BATCH = 16


def history(setup) -> list[bytes]:
    """Versions, duplicates, retractions (the batching script) among 150 deliveries about
    20 subjects: corrections and retractions fall in other batches than their first version."""
    fed = [ftf_delivery(setup, s) for s in ftf_history(random.Random(5), 150, subjects=20)]
    script = values(setup, FTF)
    return fed[:70] + script[:8] + fed[70:] + script[8:]


async def produce(conn, topic: str, signer, records: list[bytes]) -> None:
    """All to partition 0 (one arrival order), signed in chunks of 8 as a router signs."""
    producer = make_producer(conn)
    await producer.start()
    try:
        for i in range(0, len(records), 8):
            chunk = records[i : i + 8]
            headers = sign_chunk(signer, [(topic, v) for v in chunk])
            for value, h in zip(chunk, headers, strict=True):
                await producer.send(topic, value=value, partition=0, headers=h)
        await producer.flush()
    finally:
        await producer.stop()


async def one_by_one(ref, codec, keys, topic: str, records: list[bytes], start: int = 0
                     ) -> None:
    """``records`` (offsets from ``start``) applied to ``ref`` one per batch."""
    single, _ = projector(ref, codec, keys)
    feed = Stream(single, topic, keys.signer(ROUTER))
    feed.offset = start
    for value in records:
        await feed(value)


async def stored_offset(db, topic: str):
    async with db.engine.connect() as c:
        return (await c.execute(select(consumer_offsets.c.next_offset).where(
            consumer_offsets.c.topic == topic, consumer_offsets.c.partition == 0))).scalar()


def live_projector(db, codec, keys, conn, topics) -> Projector:
    p, _ = projector(db, codec, keys)
    p._conn, p._topics = conn, [topics.delivery(FTF)]
    p._max_batch = BATCH
    p.read_ahead = True  # on SQLite too: the rule is the same whatever the default
    return p


async def published_history(conn: KafkaConnection, topics: Topics, keys: KeyRing,
                            routing_setup: RoutingSetup) -> tuple[str, list[Any]]:
    """The ``ftf-db`` topic, and the history produced on it, signed by the router."""
    topic = topics.delivery(Recipient(RecipientClass.FTF_DB))
    records = history(routing_setup)
    await provision(conn, topics, [topic])
    await produce(conn, topic, keys.signer(ROUTER), records)
    return topic, records


async def test_reading_ahead_gives_the_tables_of_one_record_per_batch(
    db, ref, codec, keys, routing_setup, conn, topics
):
    topic, records = await published_history(conn, topics, keys, routing_setup)
    live = live_projector(db, codec, keys, conn, topics)
    async with live:
        stats = await live.catch_up()
    assert stats.records == len(records)
    assert stats.ahead > 0  # some batches were read while the one before was written
    assert stats.batches >= len(records) // BATCH
    await one_by_one(ref, codec, keys, topic, records)
    assert await dump(db) == await dump(ref)
    assert await stored_offset(db, topic) == len(records)


async def test_a_batch_read_ahead_before_a_stop_is_committed_before_the_loop_ends(
    db, ref, codec, keys, routing_setup, conn, topics
):
    topic, records = await published_history(conn, topics, keys, routing_setup)
    live = live_projector(db, codec, keys, conn, topics)
    first = live.after_commit

    async def stop_after_the_first_batch() -> None:
        await first()
        if live.stats.batches == 1:
            live.request_stop()

    live.after_commit = stop_after_the_first_batch  # type: ignore[method-assign]
    async with live:
        stats = await asyncio.wait_for(live.run(), 120)
    assert stats.ahead == 1  # the second batch was read ahead, then the stop came
    assert stats.batches == 2  # ... and it was applied before the loop ended
    applied = stats.records
    assert BATCH < applied <= 2 * BATCH
    assert await stored_offset(db, topic) == applied
    await one_by_one(ref, codec, keys, topic, records[:applied])
    assert await dump(db) == await dump(ref)
    # what the stop left is still there: a restarted projector takes the rest, exactly once
    rest = live_projector(db, codec, keys, conn, topics)
    async with rest:
        assert (await rest.catch_up()).records == len(records) - applied
    await one_by_one(ref, codec, keys, topic, records[applied:], applied)
    assert await dump(db) == await dump(ref)
    assert await stored_offset(db, topic) == len(records)
