"""The common-database projector's rules, on SQLite and on PostgreSQL (same suite).

Batches are built as the router would write them (Delivery envelopes with the ftf_db view)
and given to the projector's batch transaction directly; the Kafka side (assignment, seek,
kill and restart) is covered by tests/test_projector_kill.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry
from sqlalchemy import select

from consumers.ftf.fiche import add_months
from consumers.ftf.governance import DEFAULT_ACCESS_FILE, AccessConfig, AccessMode
from consumers.ftf.projector import PROJECTOR, Projector, load_fiches
from consumers.ftf.queries import count_overdue, overdue
from consumers.metrics import StoreMetrics
from consumers.store import Database
from consumers.store.tables import applied_events, contributions, governance_audit, outbox
from planr.domain import Agency, Recipient, RecipientClass
from planr.kafka import KafkaConnection
from planr.signing import ROUTER, KeyRegistry, Signer
from planr.topics import Topics
from scenarios.builders import T0
from scenarios.builders import numbered_signal as signal
from scenarios.ftf import ftf_delivery
from scenarios.keys import KeyRing
from schemas import AVRO_DIR
from schemas.codec import Codec, SchemaStore, load_schema_file
from schemas.names import FTF_REMOVAL, SIGNAL
from tests.test_store_helpers import BACKENDS, dump, records, store_url

TOPICS = Topics("unit")
TOPIC = TOPICS.delivery(Recipient(RecipientClass.FTF_DB))
OCAM = Agency.OCAM


@pytest.fixture(params=BACKENDS)
async def db(request, tmp_path):
    async with store_url(request.param, tmp_path) as url, Database(url) as database:
        yield database


@pytest.fixture
def projector(db, codec, keys):
    return make_projector(db, codec, AccessConfig.load(DEFAULT_ACCESS_FILE), keys.registry)


def make_projector(db: Database, codec: Codec, access: AccessConfig,
                   registry: KeyRegistry) -> Projector:
    return Projector(conn=KafkaConnection("127.0.0.1:1"), db=db, topics=TOPICS, codec=codec,
                     access=access, metrics=StoreMetrics(CollectorRegistry()),
                     registry=registry)


class Feeder:
    """Gives signals to the projector as consecutive records of the ftf-db topic, signed by
    the router as the router writes them."""

    def __init__(self, projector: Projector, setup, signer: Signer) -> None:
        self.projector, self.setup, self.offset = projector, setup, 0
        self.signer = signer

    async def __call__(self, *signals) -> None:
        values = [ftf_delivery(self.setup, s) for s in signals]
        batch = {TopicPartition(TOPIC, 0): records(TOPIC, values, self.offset, self.signer)}
        self.offset += len(values)
        await self.projector.process(batch)


@pytest.fixture
def feed(projector, routing_setup, keys: KeyRing):
    return Feeder(projector, routing_setup, keys.signer(ROUTER))


async def fiche(db: Database, subject: str = "P-1"):
    async with db.engine.connect() as conn:
        return (await load_fiches(conn, [subject])).get(subject)


async def rows(db: Database, table):
    async with db.engine.connect() as conn:
        return [dict(r) for r in (await conn.execute(select(table))).mappings()]


async def test_feeding_builds_a_proposed_fiche(db, feed):
    await feed(
        signal(0, statuses=("FTF",), municipality="21004",
               ftf={"situation": "in_conflict_zone", "country": "SY"}),
        signal(2, agency=Agency.POLFED, statuses=("HTF", "RADICALISING"), municipality="11002"),
        # occurred earlier than the previous one: does not move the location back
        signal(1, agency=Agency.DGEPI, statuses=("PH",), municipality="21001"),
    )
    f = await fiche(db)
    assert f is not None
    assert f.state == "proposed"
    assert f.statuses == {"FTF", "HTF", "PH"}  # RADICALISING is not a database status
    assert (f.municipality, f.arrondissement) == ("11002", "antwerpen")
    assert (f.ftf_situation, f.ftf_country) == ("in_conflict_zone", "SY")
    assert f.contributions == 3
    assert (f.first_info_at, f.last_info_at) == (T0, T0 + timedelta(hours=2))
    contribs = await rows(db, contributions)
    assert sorted(c["agency"] for c in contribs) == ["dgepi", "polfed", "vsse"]
    assert all("summary" not in c for c in contribs)
    assert f.included_at is None
    assert f.threat_level is None


async def test_only_ocam_includes_and_grades(db, feed):
    attempt = {"action": "include", "threat_level": 4, "basis": "established"}
    await feed(signal(0, agency=Agency.VSSE, ocam=attempt))
    f = await fiche(db)
    assert f is not None
    assert (f.state, f.threat_level, f.basis) == ("proposed", None, None)
    audit = await rows(db, governance_audit)
    assert [(a["agency"], a["reason"], a["detail"]) for a in audit] == [
        ("vsse", "ocam_fields_ignored", "fields=action,basis,threat_level")]
    # the rest of the contribution is applied
    assert f.statuses == {"FTF"}
    assert f.contributions == 1

    await feed(signal(1, agency=OCAM, ocam={"action": "include", "threat_level": 3}))
    f = await fiche(db)
    assert f is not None
    assert (f.state, f.threat_level, f.included_at) == ("included", 3, T0 + timedelta(hours=1))
    await feed(signal(2, agency=Agency.POLFED, ocam={"threat_level": 1}))
    f = await fiche(db)
    assert f is not None
    assert f.threat_level == 3


async def test_services_without_feed_rights_are_not_applied(db, codec, routing_setup, keys):
    access = AccessConfig({Agency.OCAM: AccessMode.CONSULT_AND_FEED,
                           Agency.AFFETR: AccessMode.CONSULT,
                           Agency.NCCN: AccessMode.HIT_NO_HIT})
    feed = Feeder(make_projector(db, codec, access, keys.registry), routing_setup,
                  keys.signer(ROUTER))
    await feed(signal(0, agency=Agency.AFFETR), signal(1, agency=Agency.NCCN),
               signal(2, agency=Agency.VSSE))  # not in the file: mode none
    assert await fiche(db) is None
    assert await rows(db, contributions) == []
    audit = sorted((a["agency"], a["reason"], a["detail"])
                   for a in await rows(db, governance_audit))
    assert audit == [("affetr", "feed_denied", "access_mode=consult"),
                     ("nccn", "feed_denied", "access_mode=hit_no_hit"),
                     ("vsse", "feed_denied", "access_mode=none")]
    outcomes = {r["agency"]: r["outcome"] for r in await rows(db, applied_events)}
    assert outcomes == {"affetr": "feed_denied", "nccn": "feed_denied", "vsse": "feed_denied"}


async def test_serious_indications_get_a_review_date_and_become_overdue(db, feed):
    await feed(signal(0, at=datetime(2026, 2, 28, 9, tzinfo=UTC)),
               signal(1, agency=OCAM, at=datetime(2026, 3, 31, 9, tzinfo=UTC),
                      ocam={"action": "include", "basis": "serious_indications",
                            "threat_level": 2}))
    f = await fiche(db)
    assert f is not None
    assert f.review_due == datetime(2026, 9, 30, 9, tzinfo=UTC)  # 6 months, day clamped
    assert f.last_review_at == datetime(2026, 3, 31, 9, tzinfo=UTC)
    assert [x.subject_id for x in await overdue(db, datetime(2026, 10, 1, tzinfo=UTC))] == ["P-1"]
    assert await overdue(db, datetime(2026, 9, 1, tzinfo=UTC)) == []
    assert await count_overdue(db, datetime(2026, 10, 1, tzinfo=UTC)) == 1
    # new information moves the review date
    await feed(signal(2, agency=Agency.POLLOC, at=datetime(2026, 8, 15, tzinfo=UTC)))
    f = await fiche(db)
    assert f is not None
    assert f.review_due == datetime(2027, 2, 15, tzinfo=UTC)
    # an established basis needs no 6-month review
    await feed(signal(3, agency=OCAM, at=datetime(2026, 8, 16, tzinfo=UTC),
                      ocam={"basis": "established"}))
    f = await fiche(db)
    assert f is not None
    assert f.review_due is None
    assert add_months(datetime(2026, 8, 31, tzinfo=UTC), 6) == datetime(2027, 2, 28, tzinfo=UTC)


async def test_removal_emits_a_removal_event(db, feed, codec):
    await feed(signal(0, agency=OCAM, ocam={"action": "include", "threat_level": 2}))
    await feed(signal(1, agency=OCAM, ocam={"action": "remove"}))
    f = await fiche(db)
    assert f is not None
    assert (f.state, f.threat_level, f.removed_at) == ("removed", None, T0 + timedelta(hours=1))
    messages = await rows(db, outbox)
    assert [m["kind"] for m in messages] == ["removal"]
    removal = codec.decode(messages[0]["value"], FTF_REMOVAL)
    assert removal["subject_id"] == "P-1"
    assert removal["event_id"] == str(signal(1).event_id)
    # removing again, or removing a never-included proposal, emits nothing
    await feed(signal(2, agency=OCAM, ocam={"action": "remove"}),
               signal(3, subject="P-2"), signal(4, subject="P-2", agency=OCAM,
                                                ocam={"action": "remove"}))
    assert len(await rows(db, outbox)) == 1


async def test_replays_apply_nothing_twice(db, feed, projector):
    batch = [signal(i, subject=f"P-{i % 3}") for i in range(30)]
    await feed(*batch[:20])
    before = await dump(db, skip=("consumer_offsets",))
    feed.offset = 0  # the same records again (a restart before offsets were stored)
    await feed(*batch[:20])
    assert await dump(db, skip=("consumer_offsets",)) == before
    assert projector.stats.duplicates == 20
    await feed(*batch)  # overlapping replay: only the 10 new ones count
    f = await fiche(db, "P-0")
    assert f is not None
    assert f.contributions == 10
    assert await db.load_offsets(PROJECTOR) == {(TOPIC, 0): 50}


async def test_bad_records_go_to_the_dead_letter_outbox(db, projector, routing_setup, keys):
    good = ftf_delivery(routing_setup, signal(0))
    await projector.process({TopicPartition(TOPIC, 0): records(TOPIC, [b"junk", good], 0,
                                                               keys.signer(ROUTER))})
    assert projector.stats.bad == 1
    messages = await rows(db, outbox)
    assert [m["kind"] for m in messages] == ["dead_letter"]
    assert await fiche(db) is not None


def test_signals_written_before_the_ocam_field_still_decode(codec):
    old = SchemaStore()
    old.add(load_schema_file(AVRO_DIR / "superseded" / "signal-v1.avsc"))
    record = signal(0).to_avro(Agency.VSSE)
    del record["ocam"]
    data = Codec(old).encode(SIGNAL, record)
    decoded = codec.decode(data, SIGNAL)
    assert decoded["ocam"] is None
    assert decoded["event_id"] == record["event_id"]
