"""A signal's life in the common database: the projector applies the latest version of each
event whatever order the versions arrive in, and honours retractions (SQLite and PostgreSQL).

The oracle is a fresh projector fed only what should remain: the latest version of each event
not retracted, in the order each event first arrived (a correction takes its event's place).
"""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import select

from consumers.ftf.governance import DEFAULT_ACCESS_FILE, AccessConfig, AccessMode
from consumers.ftf.projector import Projector, load_fiches
from consumers.ftf.rebuild import ReprojectionNeededError
from consumers.metrics import StoreMetrics
from consumers.store import Database
from consumers.store.tables import applied_events, governance_audit, outbox
from planr.domain import Agency, Recipient, RecipientClass
from planr.kafka import KafkaConnection
from planr.signing import ROUTER
from planr.topics import Topics
from scenarios.builders import T0
from scenarios.builders import numbered_signal as signal
from scenarios.ftf import ftf_delivery, retraction_record
from scenarios.keys import KeyRing
from schemas.models import SignalIn
from schemas.names import DEAD_LETTER, DELIVERY, FTF_REMOVAL
from tests.test_event_identity import Stream
from tests.test_store_helpers import dump

TOPICS = Topics("life")
FTF = Recipient(RecipientClass.FTF_DB)
TOPIC = TOPICS.delivery(FTF)
AT = datetime(2026, 11, 29, tzinfo=UTC)
OCAM, VSSE, POLFED = Agency.OCAM, Agency.VSSE, Agency.POLFED
INCLUDE = {"action": "include", "threat_level": 3, "basis": "serious_indications"}
DEFAULT_ACCESS = AccessConfig.load(DEFAULT_ACCESS_FILE)


@pytest.fixture
def make(codec, keys: KeyRing):
    """A projector on a database, and a stream of router-signed records to feed it."""

    def projector_and_stream(db: Database, access: AccessConfig = DEFAULT_ACCESS):
        proj = Projector(conn=KafkaConnection("127.0.0.1:1"), db=db, topics=TOPICS,
                         codec=codec, access=access, metrics=StoreMetrics(CollectorRegistry()),
                         registry=keys.registry)
        return proj, Stream(proj, TOPIC, keys.signer(ROUTER))

    return projector_and_stream


@pytest.fixture
def fed(db, make):
    return make(db)


@pytest.fixture
def proj(fed):
    return fed[0]


@pytest.fixture
def feed(fed):
    return fed[1]


def v(s: SignalIn, version: int) -> SignalIn:
    return s.model_copy(update={"version": version})


def retraction(setup, s: SignalIn, version: int, reason: str = "withdrawn",
               recipient: Recipient = FTF) -> bytes:
    did = setup.codec.decode(ftf_delivery(setup, s), DELIVERY)["delivery_id"]
    return retraction_record(setup.codec, delivery_id=did, event_id=str(s.event_id),
                             recipient=recipient, version=version, reason=reason, at=AT)


async def fiche_tables(db: Database):
    tables = await dump(db)
    return {"fiches": tables["fiches"], "contributions": tables["contributions"]}


async def oracle(ref: Database, make, setup, signals: list[SignalIn]):
    """The fiche tables of a fresh projector fed ``signals`` only, in one batch."""
    await make(ref)[1](*(ftf_delivery(setup, s) for s in signals))
    return await fiche_tables(ref)


async def fiche(db: Database, subject: str = "P-1"):
    async with db.engine.connect() as conn:
        return (await load_fiches(conn, [subject])).get(subject)


async def rows(db: Database, table):
    async with db.engine.connect() as conn:
        return [dict(r) for r in (await conn.execute(select(table))).mappings()]


def three_versions(n: int, subject: str) -> dict[int, SignalIn]:
    """Versions 1-3 of one event: statuses, place, time and FTF situation change."""
    return {
        1: signal(n, subject=subject, statuses=("FTF",), municipality="21004",
                  ftf={"situation": "in_conflict_zone", "country": "SY"}),
        2: v(signal(n, subject=subject, statuses=("HTF",), municipality="11002",
                    at=T0 + timedelta(hours=n, minutes=5)), 2),
        3: v(signal(n, subject=subject, statuses=("PH", "EPV"), municipality="44021",
                    at=T0 + timedelta(hours=n, minutes=7),
                    ftf={"situation": "returned", "country": "IQ"}), 3),
    }


@pytest.mark.parametrize("one_batch", [True, False], ids=["one-batch", "record-by-record"])
async def test_every_arrival_order_and_replay_gives_the_fiche_of_the_latest_version(
    db, ref, make, routing_setup, feed, proj, one_batch
):
    orders = list(itertools.permutations((1, 2, 3)))
    values, latest, stale = [], [], 0
    for k, order in enumerate(orders):
        include = signal(100 + k, subject=f"P-{k}", agency=OCAM, ocam=INCLUDE, at=T0,
                         statuses=("CTE",))
        versions = three_versions(10 + k, f"P-{k}")
        values.append(ftf_delivery(routing_setup, include))
        values += [ftf_delivery(routing_setup, versions[i]) for i in order]
        values += [ftf_delivery(routing_setup, versions[i]) for i in (3, 2, 1)]  # replayed
        latest += [include, versions[3]]
        stale += sum(1 for i, x in enumerate(order) if x < max(order[: i + 1])) + 3
    if one_batch:
        await feed(*values)
    else:
        for value in values:
            await feed(value)
    assert await fiche_tables(db) == await oracle(ref, make, routing_setup, latest)
    assert proj.stats.duplicates == stale
    f = await fiche(db, "P-0")
    assert (f.statuses, f.municipality, f.ftf_country, f.contributions) == (
        {"CTE", "PH", "EPV"}, "44021", "IQ", 2)


async def test_a_correction_of_statuses_and_place_is_followed_by_the_fiche(
    db, feed, routing_setup
):
    first = signal(0, statuses=("FTF",), municipality="21004")
    await feed(ftf_delivery(routing_setup, first),
               ftf_delivery(routing_setup, signal(1, agency=POLFED, statuses=("HTF",),
                                                  municipality="11002")))
    await feed(ftf_delivery(routing_setup, v(signal(0, statuses=("CTE",), municipality="44021",
                                                   at=T0 + timedelta(hours=2)), 2)))
    f = await fiche(db)
    assert f.statuses == {"CTE", "HTF"}  # FTF came only from the corrected version
    assert (f.municipality, f.arrondissement, f.contributions) == ("44021", "oost-vlaanderen", 2)
    # a correction that moves the event to another subject moves its contribution
    await feed(ftf_delivery(routing_setup, v(signal(0, subject="P-2", statuses=("EPV",)), 3)))
    f, moved = await fiche(db), await fiche(db, "P-2")
    assert (f.statuses, f.municipality, f.contributions) == ({"HTF"}, "11002", 1)
    assert (moved.statuses, moved.contributions, moved.state) == ({"EPV"}, 1, "proposed")


async def test_a_withdrawn_only_event_leaves_no_trace_of_its_subject(
    db, feed, routing_setup
):
    other = signal(1, subject="P-1")
    gone = signal(0, subject="P-7", statuses=("FTF", "HTF"))
    await feed(ftf_delivery(routing_setup, other), ftf_delivery(routing_setup, gone))
    before = await fiche(db, "P-1")
    await feed(retraction(routing_setup, gone, 1))
    await feed(ftf_delivery(routing_setup, gone))  # a replay after the withdrawal: stale
    assert await fiche(db, "P-7") is None
    assert "P-7" not in repr(await dump(db))  # no fiche, contribution, view or audit row
    assert await fiche(db, "P-1") == before
    marker = next(r for r in await rows(db, applied_events) if r["event_id"] == str(gone.event_id))
    assert {k: marker[k] for k in ("outcome", "version", "retraction_reason", "view",
                                   "content_hash", "subject_id")} == {
        "outcome": "retracted", "version": 1, "retraction_reason": "withdrawn", "view": None,
        "content_hash": None, "subject_id": ""}
    await feed(ftf_delivery(routing_setup, v(gone, 2)))  # delivered again, a later version
    assert (await fiche(db, "P-7")).statuses == {"FTF", "HTF"}


async def test_a_retracted_inclusion_returns_the_fiche_to_proposed(
    db, ref, make, feed, routing_setup
):
    e1, e3 = signal(0), signal(2, agency=POLFED, statuses=("HTF",))
    e2 = signal(1, agency=OCAM, ocam=INCLUDE)
    await feed(*(ftf_delivery(routing_setup, s) for s in (e1, e2, e3)))
    assert (await fiche(db)).state == "included"
    await feed(retraction(routing_setup, e2, 1, reason="not_entitled"))
    f = await fiche(db)
    assert (f.state, f.threat_level, f.included_at, f.review_due) == ("proposed", None, None,
                                                                      None)
    assert await fiche_tables(db) == await oracle(ref, make, routing_setup, [e1, e3])


async def test_a_rebuild_never_sends_a_removal_twice_and_sends_a_new_one(
    db, codec, feed, proj, routing_setup
):
    include, remove = signal(0, agency=OCAM, ocam=INCLUDE), signal(1, agency=OCAM,
                                                                  ocam={"action": "remove"})
    await feed(ftf_delivery(routing_setup, include), ftf_delivery(routing_setup, remove))
    await feed(ftf_delivery(routing_setup, v(signal(0, agency=OCAM, ocam={**INCLUDE,
                                                                        "threat_level": 4}), 2)))
    await feed(ftf_delivery(routing_setup, v(signal(1, agency=OCAM, statuses=("HTF",),
                                                    ocam={"action": "remove"}), 2)))
    removals = [m for m in await rows(db, outbox) if m["kind"] == "removal"]
    assert [codec.decode(m["value"], FTF_REMOVAL)["event_id"] for m in removals] == [
        str(remove.event_id)]
    assert (proj.removals, (await fiche(db)).state) == (1, "removed")
    # P-2: a removal while proposed sends nothing, until a correction makes it an inclusion
    graded, dropped = signal(5, subject="P-2", agency=OCAM, ocam={"threat_level": 2}), signal(
        6, subject="P-2", agency=OCAM, ocam={"action": "remove"})
    await feed(ftf_delivery(routing_setup, graded), ftf_delivery(routing_setup, dropped))
    assert proj.removals == 1
    await feed(ftf_delivery(routing_setup, v(signal(5, subject="P-2", agency=OCAM,
                                                    ocam=INCLUDE), 2)))
    removals = [codec.decode(m["value"], FTF_REMOVAL) for m in await rows(db, outbox)
                if m["kind"] == "removal"]
    assert sorted(r["event_id"] for r in removals) == sorted([str(remove.event_id),
                                                              str(dropped.event_id)])
    assert proj.removals == 2


async def test_retractions_after_ocam_removed_a_subject_never_bring_it_back(db, feed,
                                                                           routing_setup):
    include, fed = signal(0, agency=OCAM, ocam=INCLUDE), signal(1, statuses=("HTF",))
    remove = signal(2, agency=OCAM, ocam={"action": "remove"})
    await feed(*(ftf_delivery(routing_setup, s) for s in (include, fed, remove)))
    removed_at = (await fiche(db)).removed_at
    # the router retracts every event about the person, in no particular order, and the
    # retractions may straddle batches: the removing decision first
    await feed(retraction(routing_setup, remove, 1, reason="removed_from_database"))
    f = await fiche(db)
    assert (f.state, f.removed_at, f.threat_level, f.contributions) == ("removed", removed_at,
                                                                        None, 2)
    await feed(retraction(routing_setup, include, 1, reason="removed_from_database"))
    assert ((await fiche(db)).state, (await fiche(db)).statuses) == ("removed", {"HTF"})
    await feed(retraction(routing_setup, fed, 1, reason="removed_from_database"))
    assert await fiche(db) is None
    assert "P-1" not in repr(await dump(db, skip=("outbox",)))  # the removal message names it


async def test_conflicting_versions_are_dead_lettered_and_change_nothing(
    db, codec, feed, routing_setup
):
    await feed(ftf_delivery(routing_setup, signal(0)), ftf_delivery(routing_setup,
                                                                    v(signal(0), 2)))
    before = await dump(db, skip=("consumer_offsets", "outbox"))
    await feed(ftf_delivery(routing_setup, v(signal(0, statuses=("HTF",)), 2)),  # same version
               ftf_delivery(routing_setup, v(signal(0, agency=POLFED), 3)))  # other agency
    reasons = [codec.decode(m["value"], DEAD_LETTER)["reason"] for m in await rows(db, outbox)]
    assert reasons == ["event_id_conflict", "event_id_conflict"]
    assert await dump(db, skip=("consumer_offsets", "outbox")) == before


async def test_a_retraction_for_another_recipient_is_dead_lettered(db, codec, feed,
                                                                   routing_setup):
    s = signal(0)
    await feed(ftf_delivery(routing_setup, s),
               retraction(routing_setup, s, 1, recipient=Recipient(RecipientClass.NTF)))
    reasons = [codec.decode(m["value"], DEAD_LETTER)["reason"] for m in await rows(db, outbox)]
    assert reasons == ["recipient_mismatch"]
    assert (await fiche(db)).contributions == 1


async def test_each_version_keeps_its_governance_audit_and_a_withdrawal_keeps_them(
    db, feed, routing_setup
):
    s = signal(0, ocam={"action": "include"})
    await feed(ftf_delivery(routing_setup, s))
    await feed(ftf_delivery(routing_setup, v(signal(0, ocam={"action": "include",
                                                              "threat_level": 4}), 2)))
    await feed(retraction(routing_setup, s, 2))
    audit = sorted((a["event_id"], a["version"], a["reason"], a["detail"])
                   for a in await rows(db, governance_audit))
    assert audit == [(str(s.event_id), 1, "ocam_fields_ignored", "fields=action"),
                     (str(s.event_id), 2, "ocam_fields_ignored", "fields=action,threat_level")]
    assert await fiche(db) is None


async def test_a_feed_refused_on_arrival_stays_refused_in_a_rebuild(db, make, routing_setup):
    refusing = AccessConfig({OCAM: AccessMode.CONSULT_AND_FEED, VSSE: AccessMode.CONSULT_AND_FEED})
    await make(db, refusing)[1](
        ftf_delivery(routing_setup, signal(0, agency=POLFED, statuses=("HTF",))),
        ftf_delivery(routing_setup, signal(1)))
    later = make(db)[1]  # the access file now lets POLFED feed
    later.offset = 2
    await later(ftf_delivery(routing_setup, v(signal(1, statuses=("PH",)), 2)))
    f = await fiche(db)
    assert (f.statuses, f.contributions) == ({"PH"}, 1)


async def test_events_stored_before_views_were_kept_stop_a_rebuild(
    db, feed, routing_setup
):
    await feed(ftf_delivery(routing_setup, signal(0)), ftf_delivery(routing_setup, signal(1)))
    async with db.transaction() as conn:  # as revision 0004p found them: no view, no position
        await conn.execute(applied_events.update().values(view=None, topic_partition=None,
                                                          topic_offset=None))
    before = await dump(db)
    with pytest.raises(ReprojectionNeededError, match="re-project"):
        await feed(ftf_delivery(routing_setup, v(signal(1, statuses=("HTF",)), 2)))
    assert await dump(db) == before  # nothing of the batch was committed, not even offsets


Record = tuple[int, int, bool, SignalIn]  # (event, version, retraction, signal)


def _history(rng: random.Random, events: int) -> tuple[list[Record], list[SignalIn]]:
    """Records of ``events`` events (up to 3 versions, some retracted, some replayed) in a
    random order, and what the oracle is fed: the final version of each event not retracted,
    in the order of its first record."""
    records: list[Record] = []
    for n in range(events):
        agency = rng.choice((OCAM, OCAM, VSSE, POLFED, Agency.AFFETR))
        versions = [v(signal(n, subject=f"P-{rng.randrange(5)}", agency=agency,
                             statuses=tuple(rng.sample(["FTF", "HTF", "PH", "EPV"], k=2)),
                             municipality=rng.choice(("21004", "11002", "44021")),
                             at=T0 + timedelta(minutes=rng.randrange(5000)),
                             ocam=rng.choice((None, INCLUDE, {"action": "remove"},
                                              {"threat_level": 2}))), i)
                    for i in range(1, rng.randint(1, 3) + 1)]
        records += [(n, s.version, False, s) for s in versions]
        if rng.random() < 0.3:
            records.append((n, rng.randint(1, len(versions)), True, versions[0]))
        records += rng.sample(records[-len(versions):], k=rng.randint(0, 1))  # replays
    rng.shuffle(records)
    final: dict[int, tuple[int, bool, SignalIn]] = {}
    for n, version, retracted, s in records:
        if n not in final or (version, retracted) > final[n][:2]:
            final[n] = (version, retracted, s)
    first = list(dict.fromkeys(n for n, *_ in records))
    return records, [final[n][2] for n in first if not final[n][1]]


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_random_histories_in_random_batches_match_the_oracle(
    db, ref, make, routing_setup, feed, seed
):
    rng = random.Random(seed)
    records, expected = _history(rng, 40)
    values = [retraction(routing_setup, s, version) if retracted else ftf_delivery(routing_setup, s)
              for _, version, retracted, s in records]
    cuts = sorted(rng.sample(range(1, len(values)), 8))
    for start, end in itertools.pairwise([0, *cuts, len(values)]):
        await feed(*values[start:end])
    assert await fiche_tables(db) == await oracle(ref, make, routing_setup, expected)
