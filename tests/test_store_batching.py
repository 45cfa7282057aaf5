"""Batched application in the store-backed consumers (SQLite and PostgreSQL): a batch that holds
two versions of one event, a duplicate, a retraction and its delivery, a late older version...
gives exactly the tables and the counts of applying its records one at a time.

Two oracles: the same records fed one per batch to a fresh consumer (the tables), and a
sequential model of the version rules written here (what each record does, hence the counts
the metrics must show, now that they are counted once per batch).
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta, timezone

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import text
from sqlalchemy.exc import StatementError

from consumers.ftf.governance import DEFAULT_ACCESS_FILE, AccessConfig
from consumers.ftf.projector import PROJECTOR, Projector
from consumers.inboxes import INBOXES, InboxService
from consumers.metrics import StoreMetrics
from consumers.store import Database
from consumers.store.tables import governance_audit
from planr.domain import Agency, Recipient, RecipientClass
from planr.kafka import KafkaConnection
from planr.signing import ROUTER
from planr.topics import Topics
from scenarios.builders import numbered_signal as signal
from scenarios.ftf import ftf_delivery, retraction_record, tfl_delivery
from schemas.models import SignalIn
from schemas.names import DELIVERY
from tests.test_event_identity import Stream
from tests.test_store_helpers import dump, store_url

TOPICS = Topics("batching")
FTF = Recipient(RecipientClass.FTF_DB)
TFL = Recipient(RecipientClass.TFL, "brussel")
AT = datetime(2026, 11, 29, tzinfo=UTC)
NOWHERE = KafkaConnection("127.0.0.1:1")
INCLUDE = {"action": "include", "threat_level": 3, "basis": "serious_indications"}

#: (event number, version, retraction?, agency): one batch's records, in arrival order.
SCRIPT = [
    (1, 1, False, Agency.VSSE), (1, 2, False, Agency.VSSE),  # two versions of one event
    (2, 1, False, Agency.POLFED), (2, 1, False, Agency.POLFED),  # a duplicate delivery
    (3, 1, False, Agency.OCAM), (3, 1, True, Agency.OCAM),  # a delivery and its retraction
    (4, 1, True, Agency.VSSE), (4, 1, False, Agency.VSSE),  # a retraction before its delivery
    (5, 2, False, Agency.OCAM), (5, 1, False, Agency.OCAM),  # an older version arriving late
    (6, 1, False, Agency.AFFETR), (6, 1, True, Agency.AFFETR),  # a refused feed, retracted
    (7, 1, False, Agency.VSSE),  # OCAM's fields from another service: a governance audit
    (3, 2, False, Agency.OCAM), (3, 2, False, Agency.OCAM),  # back after the retraction
    (8, 1, True, Agency.POLFED),  # a retraction of an event never seen
]


def sig(n: int, version: int, agency: Agency) -> SignalIn:
    ocam = INCLUDE if agency is Agency.OCAM or n == 7 else None
    s = signal(n, subject=f"P-{n % 3}", agency=agency, ocam=ocam,
               statuses=("FTF", "HTF")[version % 2 :], at=datetime(2026, 1, n, version, tzinfo=UTC))
    return s.model_copy(update={"version": version})


def values(setup, recipient: Recipient) -> list[bytes]:
    out = []
    for n, version, retracted, agency in SCRIPT:
        s = sig(n, version, agency)
        value = ftf_delivery(setup, s) if recipient == FTF else tfl_delivery(setup, s)
        if retracted:
            did = setup.codec.decode(value, DELIVERY)["delivery_id"]
            value = retraction_record(setup.codec, delivery_id=did, event_id=str(s.event_id),
                                      recipient=recipient, version=version, reason="withdrawn",
                                      at=AT)
        out.append(value)
    return out


def model() -> tuple[Counter[tuple[str, str]], int, set[int]]:
    """The straightforward sequential reading of the version rules: what each record of
    ``SCRIPT`` does, one at a time. Returns the stored records by (agency, outcome) (an
    unseen event's retraction has agency ``unknown``; a refused feed is ``feed_denied``) and
    the number of records skipped (replays and stale versions), and the events stored."""
    kept: dict[int, tuple[int, bool, str]] = {}  # event -> (version, retracted, agency)
    stored: Counter[tuple[str, str]] = Counter()
    skipped = 0
    for n, version, retracted, agency in SCRIPT:
        before = kept.get(n)
        newer = before is None or version > before[0]
        same = before is not None and version == before[0]
        if newer or (same and retracted and before is not None and not before[1]):
            seen = before[2] if before is not None else "unknown"
            owner = seen if retracted else agency.value
            outcome = "retracted" if retracted else (
                "feed_denied" if agency is Agency.AFFETR else "applied")
            stored[owner, outcome] += 1
            kept[n] = (version, retracted, owner)
        else:
            skipped += 1
    return stored, skipped, set(kept)


def counter(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(f"{name}_total", labels) or 0.0


def projector(db: Database, codec, keys) -> tuple[Projector, CollectorRegistry]:
    registry = CollectorRegistry()
    return Projector(conn=NOWHERE, db=db, topics=TOPICS, codec=codec,
                     access=AccessConfig.load(DEFAULT_ACCESS_FILE),
                     metrics=StoreMetrics(registry), registry=keys.registry), registry


def inboxes(db: Database, codec, keys) -> tuple[InboxService, CollectorRegistry]:
    registry = CollectorRegistry()
    return InboxService(conn=NOWHERE, db=db, topics=TOPICS, codec=codec,
                        metrics=StoreMetrics(registry), registry=keys.registry,
                        recipients=[TFL]), registry


async def test_a_projector_batch_gives_the_tables_and_counts_of_one_record_at_a_time(
    db, ref, codec, keys, routing_setup
):
    records = values(routing_setup, FTF)
    topic = TOPICS.delivery(FTF)
    batched, metrics = projector(db, codec, keys)
    await Stream(batched, topic, keys.signer(ROUTER))(*records)
    single, single_metrics = projector(ref, codec, keys)
    one = Stream(single, topic, keys.signer(ROUTER))
    for value in records:
        await one(value)
    assert await dump(db) == await dump(ref)
    stored, skipped, _ = model()
    assert stored[Agency.OCAM.value, "applied"] == 3  # the model reads the script as meant
    for registry in (metrics, single_metrics):
        for (agency, outcome), n in stored.items():
            assert counter(registry, "planr_ftf_events", agency=agency, outcome=outcome) == n
        assert counter(registry, "planr_store_duplicates_skipped", consumer=PROJECTOR) == skipped
        audits = counter(registry, "planr_ftf_governance_audits", reason="ocam_fields_ignored")
        assert audits == 1  # event 7, the one version of it
    assert batched.stats.duplicates == single.stats.duplicates == skipped


async def test_an_inbox_batch_gives_the_tables_and_counts_of_one_record_at_a_time(
    db, ref, codec, keys, routing_setup
):
    records = values(routing_setup, TFL)
    topic = TOPICS.delivery(TFL)
    batched, metrics = inboxes(db, codec, keys)
    await Stream(batched, topic, keys.signer(ROUTER))(*records)
    single, single_metrics = inboxes(ref, codec, keys)
    one = Stream(single, topic, keys.signer(ROUTER))
    for value in records:
        await one(value)
    assert await dump(db) == await dump(ref)
    stored, skipped, events = model()
    # the inbox counts rows written: each delivery id once per batch that changed it
    assert counter(single_metrics, "planr_inbox_deliveries_stored",
                   recipient_class="tfl") == single.stored == sum(stored.values())
    assert counter(metrics, "planr_inbox_deliveries_stored",
                   recipient_class="tfl") == batched.stored == len(events)
    for registry in (metrics, single_metrics):
        assert counter(registry, "planr_store_duplicates_skipped", consumer=INBOXES) == skipped


@pytest.mark.parametrize("when", [
    datetime(2026, 3, 1, 12, 0, tzinfo=UTC),  # no microseconds: still written out
    datetime(2026, 3, 1, 12, 0, 5, 7, tzinfo=UTC),
    datetime(2026, 3, 1, 1, 30, 0, 250_000, tzinfo=timezone(timedelta(hours=2))),  # not UTC
])
async def test_sqlite_stores_utc_times_in_the_one_text_form(tmp_path, when):
    async with (store_url("sqlite", tmp_path) as url, Database(url) as db,
                db.transaction() as conn):
        await conn.execute(governance_audit.insert(), [{
            "event_id": "e", "version": 1, "reason": "r", "agency": "vsse",
            "subject_id": "P-1", "detail": "d", "at": when}])
        stored = (await conn.execute(text("SELECT at FROM governance_audit"))).scalar()
        back = (await conn.execute(governance_audit.select())).mappings().one()["at"]
    utc = when.astimezone(UTC)
    expected = (f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d} "
                f"{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}.{utc.microsecond:06d}")
    assert stored == expected
    assert back == when


async def test_sqlite_refuses_a_time_without_zone(tmp_path):
    async with store_url("sqlite", tmp_path) as url, Database(url) as db:
        with pytest.raises(StatementError, match="naive datetime"):
            async with db.transaction() as conn:
                await conn.execute(governance_audit.insert(), [{
                    "event_id": "e", "version": 1, "reason": "r", "agency": "vsse",
                    "subject_id": "P-1", "detail": "d", "at": datetime(2026, 3, 1)}])  # noqa: DTZ001
