"""Signatures end to end, on the real embedded broker: forged records are dead-lettered
(``unauthenticated``, with the sub-reason and key id), change nothing and reach no one, while
authentic records in the same stream go through.

Oracles: the topics read directly (dead letters, deliveries, audit), the store's tables, and
the ``cryptography`` package's own Ed25519 keys to forge with; expected details are spelled
out from the key ids the test itself created.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import select

from consumers.ftf.governance import DEFAULT_ACCESS_FILE, AccessConfig
from consumers.ftf.projector import Projector, load_fiches
from consumers.inbox_rows import read_stored
from consumers.inboxes import InboxService
from consumers.ledger import StoreLedger
from consumers.metrics import StoreMetrics
from consumers.ntf.aggregator import NtfAggregator
from consumers.outbox import DEAD_LETTER_KIND, REMOVAL_KIND, Outbox, outbox_row
from consumers.reader import read_topic
from consumers.store import Database, sqlite_url
from consumers.store.tables import outbox
from planr.domain import Agency, Recipient, RecipientClass
from planr.kafka import KafkaConnection, make_producer
from planr.keyfiles import KeyEntry, generate_key
from planr.signing import (
    AGGREGATOR,
    INBOXES,
    PROJECTOR,
    ROUTER,
    KeyRegistry,
    Signer,
    sign_headers,
    verify_record,
)
from planr.telemetry import Metrics
from planr.topics import Topics, provision
from routing.router import Router
from routing.setup import RoutingSetup
from scenarios.builders import make_signal
from scenarios.builders import numbered_signal as signal
from scenarios.ftf import ftf_delivery, tfl_delivery
from scenarios.keys import KeyRing
from schemas.codec import Codec
from schemas.names import DEAD_LETTER, DELIVERY, NTF_FACT, ROUTING_DECISION, SIGNAL
from tests.test_store_helpers import dump

pytestmark = pytest.mark.kafka

FTF_DB = Recipient(RecipientClass.FTF_DB)
TFL = Recipient(RecipientClass.TFL, "brussel")
OCAM = Agency.OCAM
Headers = list[tuple[str, bytes]] | None


async def produce(conn: KafkaConnection, topic: str,
                  records: list[tuple[bytes | None, Headers]]) -> None:
    producer = make_producer(conn)
    await producer.start()
    try:
        futures = [await producer.send(topic, value=v, key=b"k", headers=h) for v, h in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def _outbox_rows(db: Database) -> list[dict[str, Any]]:
    async with db.engine.connect() as conn:
        return [dict(r) for r in (await conn.execute(select(outbox))).mappings()]


async def dead_letters(conn: KafkaConnection, topics: Topics) -> list[dict[str, Any]]:
    return [Codec().decode(r.value, DEAD_LETTER)
            async for r in read_topic(conn, topics.dead_letter)]


def rogue(owner: str, key_dir: Path, valid_from: datetime | None = None,
          valid_until: datetime | None = None) -> tuple[Signer, KeyEntry]:
    """A key of ``owner`` that the bus's registry does not hold, and its registry entry."""
    path, entry = generate_key(owner, key_dir, valid_from=valid_from, valid_until=valid_until)
    return Signer.from_file(path, owner=owner), entry


def forgeries(keys: KeyRing, topic: str, forged: bytes, genuine: bytes,
              outsider: Signer) -> list[tuple[bytes, Headers, str]]:
    """``forged`` four ways, with the dead-letter detail each must get."""
    router = keys.signer(ROUTER)
    ocam = keys.signer(OCAM)
    return [
        (forged, None, "unsigned"),
        (forged, sign_headers(ocam, topic, forged), f"wrong_signer key_id={ocam.key_id}"),
        (forged, sign_headers(outsider, topic, forged), f"unknown_key key_id={outsider.key_id}"),
        # the router signed the genuine delivery; the value was changed afterwards
        (forged, sign_headers(router, topic, genuine), f"bad_signature key_id={router.key_id}"),
    ]


async def test_forged_ftf_deliveries_change_no_row_and_are_dead_lettered_unauthenticated(
    conn: KafkaConnection, topics: Topics, routing_setup: RoutingSetup, keys: KeyRing,
    tmp_path: Path,
):
    topic = topics.delivery(FTF_DB)
    await provision(conn, topics, [topic, topics.dead_letter, topics.ftf_removals])
    router = keys.signer(ROUTER)
    include2 = ftf_delivery(routing_setup, signal(0, agency=OCAM, ocam={
        "action": "include", "threat_level": 2}))
    await produce(conn, topic, [(include2, sign_headers(router, topic, include2))])
    outsider, _ = rogue(ROUTER, tmp_path / "rogue")
    include4 = ftf_delivery(routing_setup, signal(1, agency=OCAM, ocam={
        "action": "include", "threat_level": 4}))
    genuine1 = ftf_delivery(routing_setup, signal(1, agency=OCAM, ocam={"threat_level": 1}))
    remove = ftf_delivery(routing_setup, signal(2, agency=OCAM, ocam={"action": "remove"}))
    genuine2 = ftf_delivery(routing_setup, signal(2, agency=OCAM))
    forged = (forgeries(keys, topic, include4, genuine1, outsider)
              + forgeries(keys, topic, remove, genuine2, outsider))
    prometheus = CollectorRegistry()
    metrics = StoreMetrics(prometheus)
    url = sqlite_url(tmp_path)
    async with Database(url) as db:

        async def project() -> None:
            outbox = Outbox(conn=conn, topics=topics, metrics=metrics,
                            signer=keys.signer(PROJECTOR))
            async with Projector(conn=conn, db=db, topics=topics, codec=routing_setup.codec,
                                 access=AccessConfig.load(DEFAULT_ACCESS_FILE), metrics=metrics,
                                 registry=keys.registry, outbox=outbox) as p:
                await p.catch_up()
            await outbox.stop()

        await project()
        before = await dump(db, skip=("consumer_offsets", "outbox"))
        async with db.engine.connect() as c:
            fiche = (await load_fiches(c, ["P-1"]))["P-1"]
        assert (fiche.state, fiche.threat_level) == ("included", 2)

        await produce(conn, topic, [(v, h) for v, h, _ in forged])
        await project()
        assert await dump(db, skip=("consumer_offsets", "outbox")) == before
        assert await db.load_offsets("ftf-projector") == {(topic, 0): 1 + len(forged)}

    # the outbox sends in its own order: compare by source offset
    dead = sorted(await dead_letters(conn, topics), key=lambda d: int(d["source_offset"]))
    assert [(d["reason"], d["detail"], d["source_offset"]) for d in dead] == [
        ("unauthenticated", detail, 1 + i) for i, (_, _, detail) in enumerate(forged)]
    assert [d["original"] for d in dead] == [v for v, _, _ in forged]
    assert prometheus.get_sample_value(
        "planr_store_bad_records_total",
        {"consumer": "ftf-projector", "reason": "unauthenticated"}) == len(forged)
    assert [r async for r in read_topic(conn, topics.ftf_removals)] == []
    # what the projector sends is signed with its own key
    async for rec in read_topic(conn, topics.dead_letter):
        assert verify_record(keys.registry, rec.topic, rec.value, rec.headers,
                             at=datetime.now(UTC), expected_owner=PROJECTOR) == PROJECTOR


async def test_inbox_stores_only_router_signed_deliveries_that_decode(
    conn: KafkaConnection, topics: Topics, routing_setup: RoutingSetup, keys: KeyRing,
    tmp_path: Path,
):
    topic = topics.delivery(TFL)
    await provision(conn, topics, [topic, topics.dead_letter])
    router, vsse = keys.signer(ROUTER), keys.signer(Agency.VSSE)
    good = tfl_delivery(routing_setup, signal(0))
    forged = tfl_delivery(routing_setup, signal(1))
    envelope = Codec().decode(tfl_delivery(routing_setup, signal(2)), DELIVERY)
    bad_payload = Codec().encode(DELIVERY, {**envelope, "payload": b"not a view"})
    await produce(conn, topic, [
        (forged, None),
        (forged, sign_headers(vsse, topic, forged)),
        (bad_payload, sign_headers(router, topic, bad_payload)),  # signed, but undecodable
        (good, sign_headers(router, topic, good)),
    ])
    prometheus = CollectorRegistry()
    metrics = StoreMetrics(prometheus)
    async with Database(sqlite_url(tmp_path)) as db:
        async with InboxService(conn=conn, db=db, topics=topics, codec=routing_setup.codec,
                                metrics=metrics, registry=keys.registry,
                                recipients=[TFL]) as service:
            await service.catch_up()
        stored = await read_stored(db, routing_setup.codec, TFL)  # reads back: nothing broken
        async with db.engine.connect() as c:
            queued = (await c.execute(select(outbox.c.kind, outbox.c.value))).all()
    assert [item["event_id"] for _, item in stored] == [str(signal(0).event_id)]
    assert service.stored == 1
    for reason, count in (("unauthenticated", 2), ("bad_header", 1)):
        assert prometheus.get_sample_value(
            "planr_store_bad_records_total", {"consumer": "inboxes", "reason": reason}) == count
    # dead letters wait in the store's outbox (this service was given no outbox to send them)
    assert [k for k, _ in queued] == ["dead_letter"] * 3
    assert sorted(Codec().decode(v, DEAD_LETTER)["source_offset"] for _, v in queued) == [0, 1, 2]


async def test_router_dead_letters_every_forged_signal_and_routes_the_genuine_ones(
    conn: KafkaConnection, topics: Topics, group_id: str, metrics: Metrics,
    routing_setup: RoutingSetup, keys: KeyRing, tmp_path: Path, ledger: StoreLedger,
):
    await provision(conn, topics)
    codec = routing_setup.codec
    topic = topics.ingress(OCAM)
    now = datetime.now(UTC)
    outsider, _ = rogue(OCAM.value, tmp_path / "rogue")
    expired, expired_entry = rogue(OCAM.value, tmp_path / "expired",
                                   valid_from=now - timedelta(days=2),
                                   valid_until=now - timedelta(days=1))
    registry = KeyRegistry([*keys.registry.entries, expired_entry])

    def value(s: Any) -> bytes:
        return codec.encode(SIGNAL, s.to_avro(OCAM))

    ocam, vsse = keys.signer(OCAM), keys.signer(Agency.VSSE)
    signals = [make_signal() for _ in range(8)]
    v = [value(s) for s in signals]
    tampered = codec.encode(SIGNAL, {**signals[5].to_avro(OCAM), "tlp": "green"})
    batch: list[tuple[bytes | None, Headers]] = [
        (v[0], sign_headers(ocam, topic, v[0])),
        (v[1], None),
        (v[2], sign_headers(outsider, topic, v[2])),
        (v[3], sign_headers(vsse, topic, v[3])),
        (v[4], sign_headers(expired, topic, v[4])),
        (tampered, sign_headers(ocam, topic, v[5])),
        (None, sign_headers(ocam, topic, b"")),  # a tombstone
        (v[6], sign_headers(ocam, topic, v[6])),
        (v[7], sign_headers(ocam, topic, v[7])),
    ]
    await produce(conn, topic, batch)
    router = Router(conn=conn, topics=topics, engine=routing_setup.engine,
                    views=routing_setup.views, codec=codec, metrics=metrics, registry=registry,
                    signer=keys.signer(ROUTER), group_id=group_id, ledger=ledger)
    async with router:
        stats = await router.run(until_idle=1.5)

    assert stats.signals == 3
    dead = await dead_letters(conn, topics)
    assert [(d["reason"], d["detail"], d["source_offset"]) for d in dead] == [
        ("unauthenticated", "unsigned", 1),
        ("unauthenticated", f"unknown_key key_id={outsider.key_id}", 2),
        ("unauthenticated", f"wrong_signer key_id={vsse.key_id}", 3),
        ("unauthenticated", f"expired_key key_id={expired.key_id}", 4),
        ("unauthenticated", f"bad_signature key_id={ocam.key_id}", 5),
        ("undecodable", "record has no value (tombstone)", 6),
    ]
    assert [d["original"] for d in dead[:5]] == [*v[1:5], tampered]
    assert metrics.registry.get_sample_value(
        "planr_dead_letters_total", {"reason": "unauthenticated"}) == 5
    genuine = {str(signals[i].event_id) for i in (0, 6, 7)}
    brussel = [r async for r in read_topic(conn, topics.delivery(TFL))]
    assert {codec.decode(r.value, DELIVERY)["event_id"] for r in brussel} == genuine
    audited = [r async for r in read_topic(conn, topics.audit)]
    assert {codec.decode(r.value, ROUTING_DECISION)["event_id"] for r in audited} == genuine
    # every record the router wrote carries the router's signature for its own topic
    at = datetime.now(UTC)
    for rec in [*brussel, *audited, *[r async for r in read_topic(conn, topics.dead_letter)]]:
        assert verify_record(keys.registry, rec.topic, rec.value, rec.headers, at=at,
                             expected_owner=ROUTER) == ROUTER


async def test_aggregator_counts_only_router_signed_facts(
    conn: KafkaConnection, topics: Topics, routing_setup: RoutingSetup, keys: KeyRing,
    tmp_path: Path,
):
    topic = topics.ntf_facts
    await provision(conn, topics, [topic, topics.dead_letter, topics.delivery(
        Recipient(RecipientClass.NTF))])
    codec = routing_setup.codec

    def fact(n: int) -> bytes:
        return codec.encode(NTF_FACT, {
            "event_id": f"0e000000-0000-4000-8000-00000000000{n}", "period": "2026-01",
            "arrondissement": "brussel", "phenomena": ["salafism"], "policy_version": "v"})

    router, polfed = keys.signer(ROUTER), keys.signer(Agency.POLFED)
    await produce(conn, topic, [
        (fact(0), sign_headers(router, topic, fact(0))),
        (fact(1), sign_headers(polfed, topic, fact(1))),
        (fact(2), None),
        (fact(3), sign_headers(router, topic, fact(3))),
    ])
    store_metrics = StoreMetrics(CollectorRegistry())
    async with Database(sqlite_url(tmp_path, "ntf.db")) as db:
        outbox = Outbox(conn=conn, topics=topics, metrics=store_metrics,
                        signer=keys.signer(AGGREGATOR))
        aggregator = NtfAggregator(conn=conn, db=db, topics=topics, codec=codec,
                                   metrics=store_metrics, registry=keys.registry, threshold=5,
                                   policy_version="v", outbox=outbox, interval=0.2,
                                   now=lambda: datetime(2026, 3, 10, tzinfo=UTC))
        try:
            async with aggregator:
                await aggregator.run(until_idle=1.0)
        finally:
            await outbox.stop()
        assert aggregator.facts == 2
        dead = [codec.decode(r["value"], DEAD_LETTER) for r in await _outbox_rows(db)
                if r["kind"] == DEAD_LETTER_KIND]
    assert sorted((d["reason"], d["detail"]) for d in dead) == [
        ("unauthenticated", "unsigned"),
        ("unauthenticated", f"wrong_signer key_id={polfed.key_id}"),
    ]
    ntf = [r async for r in read_topic(conn, topics.delivery(Recipient(RecipientClass.NTF)))]
    assert ntf
    at = datetime.now(UTC)
    for rec in ntf:
        assert verify_record(keys.registry, rec.topic, rec.value, rec.headers, at=at,
                             expected_owner=AGGREGATOR) == AGGREGATOR



async def test_inbox_outbox_sends_only_dead_letters_so_removals_carry_the_projector_key(
    conn: KafkaConnection, topics: Topics, keys: KeyRing, tmp_path: Path,
):
    await provision(conn, topics, [topics.dead_letter, topics.ftf_removals])
    now = datetime.now(UTC)
    rows = [outbox_row("m-removal", REMOVAL_KIND, "P-1", b"removal-bytes", now),
            outbox_row("m-dead", DEAD_LETTER_KIND, "t", b"dead-bytes", now)]
    metrics = StoreMetrics(CollectorRegistry())
    async with Database(sqlite_url(tmp_path)) as db:
        async with db.transaction() as c:
            await c.execute(db.insert_ignore(outbox), rows)
        async with Outbox(conn=conn, topics=topics, metrics=metrics, signer=keys.signer(INBOXES),
                          kinds=[DEAD_LETTER_KIND]) as inbox_outbox:
            assert await inbox_outbox.flush(db) == 1
        assert [r async for r in read_topic(conn, topics.ftf_removals)] == []
        async with Outbox(conn=conn, topics=topics, metrics=metrics,
                          signer=keys.signer(PROJECTOR)) as projector_outbox:
            assert await projector_outbox.flush(db) == 1
    at = datetime.now(UTC)
    [removal] = [r async for r in read_topic(conn, topics.ftf_removals)]
    [dead] = [r async for r in read_topic(conn, topics.dead_letter)]
    assert (removal.value, dead.value) == (b"removal-bytes", b"dead-bytes")
    assert verify_record(keys.registry, removal.topic, removal.value, removal.headers, at=at,
                         expected_owner=PROJECTOR) == PROJECTOR
    assert verify_record(keys.registry, dead.topic, dead.value, dead.headers, at=at,
                         expected_owner=INBOXES) == INBOXES
