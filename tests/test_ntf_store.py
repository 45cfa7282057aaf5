"""The NTF aggregator's store on SQLite and PostgreSQL, batches handed over directly: each
fact counted once by event id, a reused id with other content and a malformed fact
dead-lettered, closed months published once into the outbox, late facts kept apart."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry
from sqlalchemy import select

from consumers.metrics import StoreMetrics
from consumers.ntf.aggregator import NtfAggregator, cell_id
from consumers.store import Database
from consumers.store.tables import ntf_counts, ntf_events, ntf_months, ntf_published, outbox
from planr.kafka import KafkaConnection
from planr.signing import ROUTER
from planr.topics import Topics
from schemas.names import DEAD_LETTER, NTF_AGGREGATE, NTF_FACT
from tests.test_store_helpers import BACKENDS, records, store_url

TOPICS = Topics("ntfstore")
NOWHERE = KafkaConnection("127.0.0.1:1")  # batches are handed over directly: no broker
OCT_10 = datetime(2026, 10, 10, tzinfo=UTC)


@pytest.fixture(params=BACKENDS)
async def db(request, tmp_path):
    async with store_url(request.param, tmp_path) as url, Database(url) as database:
        yield database


@pytest.fixture
def aggregator(db, codec, keys):
    agg = NtfAggregator(conn=NOWHERE, db=db, topics=TOPICS, codec=codec,
                        metrics=StoreMetrics(CollectorRegistry()), registry=keys.registry,
                        threshold=5, policy_version="sha256:p", now=lambda: OCT_10)
    agg.test_signer = keys.signer(ROUTER)  # type: ignore[attr-defined]  # the facts' writer
    return agg


def fact(codec, eid: str, period: str = "2026-09", arr: str = "eupen",
         phenomena: tuple[str, ...] = ("left_wing",), version: str = "v1") -> bytes:
    value: bytes = codec.encode(NTF_FACT, {
        "event_id": eid, "period": period, "arrondissement": arr, "phenomena": list(phenomena),
        "policy_version": version})
    return value


class Feed:
    def __init__(self, consumer: NtfAggregator) -> None:
        self.consumer, self.offset = consumer, 0

    async def __call__(self, *values: bytes) -> None:
        batch = {TopicPartition(TOPICS.ntf_facts, 0):
                 records(TOPICS.ntf_facts, list(values), self.offset,
                         self.consumer.test_signer)}  # type: ignore[attr-defined]
        self.offset += len(values)
        await self.consumer.process(batch)


async def table(db: Database, t: Any) -> list[dict[str, Any]]:
    async with db.engine.connect() as c:
        return [dict(r) for r in (await c.execute(select(t))).mappings()]


async def test_each_fact_counts_once_by_event_id_whatever_its_policy_version(db, codec,
                                                                            aggregator):
    feed = Feed(aggregator)
    await feed(fact(codec, "e1"), fact(codec, "e2", phenomena=("left_wing", "salafism")),
               fact(codec, "e1"), fact(codec, "e3", phenomena=()))
    await feed(fact(codec, "e2", phenomena=("salafism", "left_wing"), version="v2"))
    counts = {(r["arrondissement"], r["phenomenon"]): r["count"]
              for r in await table(db, ntf_counts)}
    assert counts == {("eupen", "left_wing"): 2, ("eupen", "salafism"): 1, ("eupen", "none"): 1}
    assert (aggregator.facts, aggregator.stats.duplicates, aggregator.stats.bad) == (3, 2, 0)


async def test_a_reused_id_with_other_content_and_a_malformed_fact_are_dead_lettered(
    db, codec, aggregator
):
    feed = Feed(aggregator)
    await feed(fact(codec, "e1"))
    await feed(fact(codec, "e1", arr="gent"), fact(codec, "e9", period="2026-13"), b"junk")
    reasons = [codec.decode(r["value"], DEAD_LETTER)["reason"] for r in await table(db, outbox)]
    assert sorted(reasons) == ["bad_header", "event_id_conflict", "invalid_fact"]
    assert [r["event_id"] for r in await table(db, ntf_events)] == ["e1"]
    assert [r["count"] for r in await table(db, ntf_counts)] == [1]


async def test_closed_months_are_published_once_and_a_later_fact_is_kept_late(db, codec,
                                                                             aggregator):
    feed = Feed(aggregator)
    await feed(*(fact(codec, f"s{i}", arr="brussel") for i in range(7)), fact(codec, "one"),
               fact(codec, "oct", period="2026-10"))
    assert await aggregator.publish_closed() == ["2026-09"]  # October is still open
    assert await aggregator.publish_closed() == []
    months = await table(db, ntf_months)
    assert [(m["period"], m["state"], m["threshold"]) for m in months] == [
        ("2026-09", "published", 5)]
    published = {(r["arrondissement"], r["phenomenon"]): r for r in await table(db, ntf_published)}
    assert published[("eupen", "left_wing")]["shown"] == "<5"
    messages = [r for r in await table(db, outbox) if r["kind"] == "ntf_statistics"]
    assert len(messages) == len(published) == months[0]["cells"]
    cells = {codec.decode(m["value"], NTF_AGGREGATE)["aggregate_id"] for m in messages}
    assert cells == {cell_id("2026-09", a, p) for a, p in published}

    await feed(fact(codec, "late"))
    late = [r["event_id"] for r in await table(db, ntf_events) if r["late"]]
    assert late == ["late"]
    assert await aggregator.publish_closed(datetime(2026, 11, 4, tzinfo=UTC)) == ["2026-10"]
    oct_cells = [r for r in await table(db, ntf_published) if r["period"] == "2026-10"]
    assert {r["shown"] for r in oct_cells} == {"<5"}
    assert len([r for r in await table(db, outbox) if r["kind"] == "ntf_statistics"]) == \
        len(messages) + len(oct_cells)
