"""Chunk signatures on the embedded broker: what a BatchSender and a Publisher produce reads
back in order, where the Java client would put it, and verifies with one Ed25519 check per
chunk.

Oracles: aiokafka's own murmur2 for the partitions, the values and keys the test sent, and a
spy on the registry's Ed25519 check (the pure-logic tests are in tests/test_sigtree.py).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from aiokafka.partitioner import murmur2
from prometheus_client import CollectorRegistry

from consumers.reader import read_topic
from planr.batching import CHUNK_RECORDS, BatchSender
from planr.domain import Agency
from planr.errors import UsageError
from planr.kafka import KafkaConnection, make_producer
from planr.signing import KeyRegistry, SignatureError, verify_record
from planr.telemetry import Metrics
from planr.topics import Topics, provision
from producers.publisher import Publisher
from scenarios.builders import numbered_signal
from scenarios.keys import KeyRing
from schemas.codec import Codec
from schemas.names import SIGNAL

pytestmark = pytest.mark.kafka


async def test_batch_sender_signs_per_topic_chunks_and_every_record_reads_back_verified(
    conn: KafkaConnection, topics: Topics, keys: KeyRing, ed25519_checks: list[bytes]
):
    ingress, audit = topics.ingress(Agency.VSSE), topics.audit  # 3 partitions each
    await provision(conn, topics, [ingress, audit])
    signer = keys.signer(Agency.VSSE)
    sent: dict[bytes, tuple[str, bytes | None]] = {}
    producer = make_producer(conn)
    await producer.start()
    try:
        out = BatchSender(producer, signer=signer)
        for i in range(150):
            topic = ingress if i % 3 else audit
            key = None if i % 10 == 0 else b"subject-%d" % (i % 17)
            value = b"record-%03d" % i
            await out.add(topic, value, key, headers=[("trace", b"t%d" % i)])
            sent[value] = (topic, key)
        assert await out.flush() == 150
    finally:
        await producer.stop()
    registry = KeyRegistry(keys.registry.entries)  # a fresh cache
    got = [r async for r in read_topic(conn, ingress)] + [r async for r in read_topic(conn, audit)]
    assert sorted(r.value for r in got) == sorted(sent)
    for rec in got:
        assert (rec.topic, rec.key) == sent[rec.value]
        if rec.key is not None:  # where the Java client would put it
            assert rec.partition == (murmur2(rec.key) & 0x7FFFFFFF) % 3
        assert rec.headers[0] == ("trace", b"t%d" % int(rec.value[7:]))
        assert verify_record(registry, rec.topic, rec.value, rec.headers, at=datetime.now(UTC),
                             expected_owner=Agency.VSSE.value) == Agency.VSSE.value
        assert {k for k, _ in rec.headers} == {"trace", "planr-key-id", "planr-sig", "planr-proof"}
    per_topic = {ingress: 100, audit: 50}  # i % 3 decides the topic
    chunks = sum(-(-n // CHUNK_RECORDS) for n in per_topic.values())
    assert len({dict(r.headers)["planr-sig"] for r in got}) == chunks
    assert len(ed25519_checks) == chunks
    # a chunk holds one topic's records: its reader sees whole chunks, only its own records
    topics_of: dict[bytes, set[str]] = {}
    for rec in got:
        topics_of.setdefault(dict(rec.headers)["planr-sig"], set()).add(rec.topic)
    assert all(len(t) == 1 for t in topics_of.values())
    for part in {(r.topic, r.partition) for r in got}:  # the order of adding, per partition
        numbers = [int(r.value[7:]) for r in got if (r.topic, r.partition) == part]
        assert numbers == sorted(numbers)


async def test_published_signals_are_signed_in_chunks_that_the_router_checks_once_each(
    conn: KafkaConnection, topics: Topics, keys: KeyRing, codec: Codec,
    ed25519_checks: list[bytes]
):
    ingress = topics.ingress(Agency.VSSE)
    await provision(conn, topics, [ingress])
    signals = [numbered_signal(i, subject=f"P-{i % 5}") for i in range(CHUNK_RECORDS + 6)]
    async with Publisher(conn=conn, agency=Agency.VSSE, topics=topics, codec=codec,
                         metrics=Metrics(CollectorRegistry()),
                         signer=keys.signer(Agency.VSSE)) as pub:
        ids = await pub.publish_many(signals)
        single = await pub.publish(numbered_signal(999))
    registry = KeyRegistry(keys.registry.entries)
    got = [r async for r in read_topic(conn, ingress)]
    assert len(got) == len(ids) + 1
    at = datetime.now(UTC)
    for rec in got:
        assert verify_record(registry, ingress, rec.value, rec.headers, at=at,
                             expected_owner=Agency.VSSE.value) == Agency.VSSE.value
    proofs = [r for r in got if "planr-proof" in dict(r.headers)]
    assert len(proofs) == len(signals)  # the lone publish() keeps the single form
    (lone,) = [r for r in got if "planr-proof" not in dict(r.headers)]
    assert codec.decode(lone.value, SIGNAL)["event_id"] == single
    assert len(ed25519_checks) == 3  # two chunks, one single record
    # a record of a chunk moved to another topic of the same agency is refused
    moved = proofs[0]
    with pytest.raises(SignatureError):
        verify_record(registry, topics.ingress(Agency.OCAM), moved.value, moved.headers, at=at)


async def test_published_signals_land_where_the_java_client_puts_them_in_publishing_order(
    conn: KafkaConnection, topics: Topics, keys: KeyRing, codec: Codec
):
    ingress = topics.ingress(Agency.VSSE)  # 3 partitions
    await provision(conn, topics, [ingress])
    signals = [numbered_signal(i, subject=f"P-{i % 7}") for i in range(2 * CHUNK_RECORDS + 9)]
    async with Publisher(conn=conn, agency=Agency.VSSE, topics=topics, codec=codec,
                         metrics=Metrics(CollectorRegistry()),
                         signer=keys.signer(Agency.VSSE)) as pub:
        ids = await pub.publish_many(signals[:100])
        ids += await pub.publish_many(signals[100:])
    assert ids == [str(s.event_id) for s in signals]
    got = [r async for r in read_topic(conn, ingress)]
    assert len(got) == len(signals)
    for rec in got:
        assert rec.key is not None
        assert rec.partition == (murmur2(rec.key) & 0x7FFFFFFF) % 3
    for subject in {s.subject.id for s in signals}:
        published = [str(s.event_id) for s in signals if s.subject.id == subject]
        read = [codec.decode(r.value, SIGNAL)["event_id"] for r in got
                if r.key == subject.encode()]
        assert read == published


async def test_a_signal_claiming_another_agency_stops_the_call_before_anything_is_sent(
    conn: KafkaConnection, topics: Topics, keys: KeyRing, codec: Codec
):
    ingress = topics.ingress(Agency.VSSE)
    await provision(conn, topics, [ingress])
    # more than one whole record batch (256 KiB) before the bad one
    signals = [numbered_signal(i) for i in range(1000)]
    signals.append(numbered_signal(99_999, agency=Agency.OCAM))
    async with Publisher(conn=conn, agency=Agency.VSSE, topics=topics, codec=codec,
                         metrics=Metrics(CollectorRegistry()),
                         signer=keys.signer(Agency.VSSE)) as pub:
        with pytest.raises(UsageError, match="claims another agency"):
            await pub.publish_many(signals)
        await pub.publish(numbered_signal(1000))
    got = [r async for r in read_topic(conn, ingress)]
    assert [codec.decode(r.value, SIGNAL)["event_id"] for r in got] == [
        str(numbered_signal(1000).event_id)]


async def test_concurrent_calls_share_chunks_and_every_signal_reads_back_once_verified(
    conn: KafkaConnection, topics: Topics, keys: KeyRing, codec: Codec
):
    ingress = topics.ingress(Agency.VSSE)
    await provision(conn, topics, [ingress])
    singles = [numbered_signal(i, subject=f"P-{i % 4}") for i in range(40)]
    many = [[numbered_signal(100 + 30 * k + i, subject=f"P-{i % 4}") for i in range(30)]
            for k in range(5)]
    async with Publisher(conn=conn, agency=Agency.VSSE, topics=topics, codec=codec,
                         metrics=Metrics(CollectorRegistry()),
                         signer=keys.signer(Agency.VSSE)) as pub:
        await asyncio.gather(*(pub.publish(s) for s in singles),
                             *(pub.publish_many(batch) for batch in many))
    got = [r async for r in read_topic(conn, ingress)]
    read = [codec.decode(r.value, SIGNAL)["event_id"] for r in got]
    published = [str(s.event_id) for s in [*singles, *(s for b in many for s in b)]]
    assert sorted(read) == sorted(published)  # each once
    at = datetime.now(UTC)
    for rec in got:
        assert verify_record(KeyRegistry(keys.registry.entries), ingress, rec.value,
                             rec.headers, at=at, expected_owner=Agency.VSSE.value)
    # 45 calls under way together: their records were signed in shared chunks
    assert len({dict(r.headers)["planr-sig"] for r in got}) < len(singles) + len(many)
    for batch in many:  # each call's records in its order, per subject
        for subject in {s.subject.id for s in batch}:
            mine = [str(s.event_id) for s in batch if s.subject.id == subject]
            assert [e for e in read if e in mine] == mine
