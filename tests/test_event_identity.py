"""Event identity in the router's sinks: an event is (agency, event id). The same id with the
same content is a duplicate, skipped and counted; with other content it is a conflict,
dead-lettered (``event_id_conflict``) and counted, never a silent skip. Inboxes decode a
payload before they store it. Both sinks run on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry

from consumers.ftf.governance import DEFAULT_ACCESS_FILE, AccessConfig
from consumers.ftf.projector import Projector, load_fiches
from consumers.inbox_rows import read_stored
from consumers.inboxes import InboxService
from consumers.metrics import StoreMetrics
from consumers.store import Database
from consumers.store.tables import applied_events, inbox_deliveries, outbox
from planr.domain import Agency, Recipient, RecipientClass
from planr.kafka import KafkaConnection
from planr.signing import ROUTER, Signer
from planr.topics import Topics
from scenarios.builders import numbered_signal as signal
from scenarios.ftf import ftf_delivery, tfl_delivery
from schemas.names import DEAD_LETTER, DELIVERY
from tests.test_store_helpers import BACKENDS, records, store_url

TOPICS = Topics("identity")
FTF_TOPIC = TOPICS.delivery(Recipient(RecipientClass.FTF_DB))
TFL = Recipient(RecipientClass.TFL, "brussel")
TFL_TOPIC = TOPICS.delivery(TFL)
NOWHERE = KafkaConnection("127.0.0.1:1")  # batches are handed over directly: no broker


@pytest.fixture(params=BACKENDS)
async def db(request, tmp_path):
    async with store_url(request.param, tmp_path) as url, Database(url) as database:
        yield database


async def _rows(db: Database, table) -> list[dict[str, Any]]:
    async with db.engine.connect() as conn:
        return [dict(r) for r in (await conn.execute(table.select())).mappings()]


async def _dead_reasons(db: Database, codec) -> list[str]:
    return [codec.decode(m["value"], DEAD_LETTER)["reason"] for m in await _rows(db, outbox)
            if m["kind"] == "dead_letter"]


class Stream:
    """Consecutive records of one topic, signed by the router, handed to a store-backed
    consumer batch by batch."""

    def __init__(self, consumer, topic: str, signer: Signer) -> None:
        self.consumer, self.topic, self.offset, self.signer = consumer, topic, 0, signer

    async def __call__(self, *values: bytes) -> None:
        batch = {TopicPartition(self.topic, 0): records(self.topic, list(values), self.offset,
                                                        self.signer)}
        self.offset += len(values)
        await self.consumer.process(batch)


@pytest.fixture
def projector(db, codec, keys):
    return Projector(conn=NOWHERE, db=db, topics=TOPICS, codec=codec,
                     access=AccessConfig.load(DEFAULT_ACCESS_FILE),
                     metrics=StoreMetrics(CollectorRegistry()), registry=keys.registry)


@pytest.fixture
def inbox(db, codec, keys):
    return InboxService(conn=NOWHERE, db=db, topics=TOPICS, codec=codec,
                        metrics=StoreMetrics(CollectorRegistry()), registry=keys.registry,
                        recipients=[TFL])


@pytest.fixture
def router_key(keys):
    return keys.signer(ROUTER)


async def test_projector_skips_a_republished_event_with_the_same_content(
    db, codec, projector, routing_setup, router_key
):
    feed = Stream(projector, FTF_TOPIC, router_key)
    s = signal(0)
    await feed(ftf_delivery(routing_setup, s))
    # the agency retried: same content, a later publication time
    await feed(ftf_delivery(routing_setup, s, s.occurred_at + timedelta(hours=2)))
    assert projector.stats.duplicates == 1
    assert projector.stats.bad == 0
    assert await _dead_reasons(db, codec) == []
    assert len(await _rows(db, applied_events)) == 1


@pytest.mark.parametrize("reuser", [
    pytest.param({"agency": Agency.OCAM, "ocam": {"action": "include", "threat_level": 4,
                                                 "basis": "established"}}, id="ocam-decision"),
    pytest.param({"agency": Agency.POLFED}, id="other-agency"),
    pytest.param({"subject": "P-2"}, id="other-subject"),
])
async def test_projector_dead_letters_an_event_id_reused_with_other_content(
    db, codec, projector, routing_setup, router_key, reuser
):
    feed = Stream(projector, FTF_TOPIC, router_key)
    await feed(ftf_delivery(routing_setup, signal(0)))
    before = await _rows(db, applied_events)
    await feed(ftf_delivery(routing_setup, signal(0, **reuser)))  # same event id (n=0)
    assert await _dead_reasons(db, codec) == ["event_id_conflict"]
    assert projector.stats.bad == 1
    assert projector.stats.duplicates == 0
    assert await _rows(db, applied_events) == before
    async with db.engine.connect() as conn:
        fiches = await load_fiches(conn, ["P-1", "P-2"])
    assert set(fiches) == {"P-1"}
    assert fiches["P-1"].threat_level is None  # the reused id changed nothing


async def test_projector_conflict_within_one_batch_is_caught_too(
    db, codec, projector, routing_setup, router_key
):
    feed = Stream(projector, FTF_TOPIC, router_key)
    await feed(ftf_delivery(routing_setup, signal(0)),
               ftf_delivery(routing_setup, signal(0, agency=Agency.POLFED)))
    assert await _dead_reasons(db, codec) == ["event_id_conflict"]
    assert len(await _rows(db, applied_events)) == 1


async def test_inbox_skips_a_replay_and_dead_letters_a_reused_delivery_id(
    db, codec, inbox, routing_setup, router_key
):
    feed = Stream(inbox, TFL_TOPIC, router_key)
    first = tfl_delivery(routing_setup, signal(0, agency=Agency.POLLOC))
    await feed(first, first)
    assert inbox.stats.duplicates == 1
    await feed(tfl_delivery(routing_setup, signal(0, agency=Agency.POLLOC, subject="P-9")))
    assert await _dead_reasons(db, codec) == ["event_id_conflict"]
    stored = await read_stored(db, codec, TFL)
    assert [item["payload"]["subject"]["id"] for _, item in stored] == ["P-1"]


async def test_inbox_never_stores_a_payload_that_does_not_decode(
    db, codec, inbox, routing_setup, router_key
):
    good = tfl_delivery(routing_setup, signal(1, agency=Agency.POLLOC))
    envelope = codec.decode(good, DELIVERY)
    broken = codec.encode(DELIVERY, {**envelope, "delivery_id": "b" * 8 + envelope[
        "delivery_id"][8:], "payload": b"\xc3\x01not a view"})
    await Stream(inbox, TFL_TOPIC, router_key)(broken, good)
    assert len(await _rows(db, inbox_deliveries)) == 1
    assert inbox.stats.bad == 1
    assert await _dead_reasons(db, codec) == ["unknown_schema"]  # C3 01 + no known schema
    # the inbox stays readable
    assert [item["delivery_id"] for _, item in await read_stored(db, codec, TFL)] == [
        envelope["delivery_id"]]
