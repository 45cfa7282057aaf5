"""A signal's whole life on the real broker: corrections and withdrawals arriving out of order
and replayed, OCAM's removal of a person, and the ledger. The oracle is written by hand from
the policy's rules for the few signals used (Brussels, unclassified/confidentiel, salafism)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from consumers.ftf.governance import DEFAULT_ACCESS_FILE, AccessConfig
from consumers.ftf.projector import Projector, load_fiches
from consumers.inbox_rows import read_stored
from consumers.inboxes import InboxService
from consumers.ledger import StoreLedger
from consumers.metrics import StoreMetrics
from consumers.outbox import Outbox
from consumers.reader import read_topic
from consumers.store import Database, sqlite_url
from planr.domain import Agency, Recipient
from planr.kafka import KafkaConnection, make_producer
from planr.signing import PROJECTOR, ROUTER, sign_headers
from planr.telemetry import Metrics
from planr.topics import Topics, provision
from producers.publisher import Publisher
from routing.router import Router
from routing.setup import RoutingSetup
from scenarios.builders import make_signal
from scenarios.invalid_fields import FREE_TEXT_SUBJECT
from scenarios.keys import KeyRing
from schemas.codec import Codec
from schemas.models import SignalIn
from schemas.names import DEAD_LETTER, DELIVERY, RETRACTION, WITHDRAWAL

pytestmark = pytest.mark.kafka

TFL, CSILR, WG = "tfl:brussel", "csilr:21004", "wg:salafism"
INBOXES = [Recipient.parse(r) for r in (TFL, CSILR, WG)]


def _signal(event_id: str, version: int, subject: str | dict[str, Any] = "P-1",
            **kw: Any) -> SignalIn:
    base: dict[str, Any] = {
        "event_id": event_id, "version": version, "local_sharing": True, "domains": [],
        "subject": subject if isinstance(subject, dict)
        else {"id": subject, "kind": "person", "statuses": []},
        "summary": f"version {version}",
    }
    return make_signal(**{**base, **kw})


async def _provision(conn: KafkaConnection, topics: Topics) -> None:
    await provision(conn, topics, [
        *topics.all_ingress(), topics.audit, topics.dead_letter, topics.ntf_facts,
        topics.ftf_removals, *(topics.delivery(Recipient.parse(r))
                               for r in (TFL, CSILR, WG, "ftf-db", "wg:ftf"))])


async def _route(conn: KafkaConnection, topics: Topics, setup: RoutingSetup, codec: Codec,
                 ledger: StoreLedger, group: str, keys: KeyRing) -> Any:
    async with Router(conn=conn, topics=topics, engine=setup.engine, views=setup.views,
                      codec=codec, metrics=Metrics(CollectorRegistry()), group_id=group,
                      ledger=ledger, registry=keys.registry,
                      signer=keys.signer(ROUTER)) as router:
        return await router.run(until_idle=1.5)


async def _inboxes(conn: KafkaConnection, topics: Topics, codec: Codec, db: Database,
                   keys: KeyRing) -> dict[str, list[dict[str, Any]]]:
    async with InboxService(conn=conn, db=db, topics=topics, codec=codec,
                            metrics=StoreMetrics(CollectorRegistry()), registry=keys.registry,
                            recipients=INBOXES) as service:
        await service.catch_up()
    return {str(r): [item for _, item in await read_stored(db, codec, r)] for r in INBOXES}


async def test_corrections_and_withdrawals_out_of_order_and_replayed(
    conn, topics, routing_setup, codec, ledger, group_id, tmp_path, keys
):
    await _provision(conn, topics)
    a, b = "0a000000-0000-4000-8000-000000000001", "0b000000-0000-4000-8000-000000000002"
    metrics = Metrics(CollectorRegistry())
    async with Publisher(conn=conn, agency=Agency.VSSE, topics=topics, codec=codec,
                         metrics=metrics, signer=keys.signer(Agency.VSSE)) as pub:
        # A: v3 (confidentiel: no longer for the CSIL R) arrives before v2; v1 replayed last
        await pub.publish_many([_signal(a, 1), _signal(b, 1, subject="P-2")])
    stats1 = await _route(conn, topics, routing_setup, codec, ledger, group_id, keys)
    async with Publisher(conn=conn, agency=Agency.VSSE, topics=topics, codec=codec,
                         metrics=metrics, signer=keys.signer(Agency.VSSE)) as pub:
        await pub.publish_many([_signal(a, 3, classification="confidentiel"), _signal(a, 2)])
        await pub.withdraw(b, subject_id="P-2", version=1)
        await pub.publish_many([_signal(a, 1)])
    stats2 = await _route(conn, topics, routing_setup, codec, ledger, group_id, keys)
    assert stats1.deliveries == {TFL: 2, CSILR: 2, WG: 2}
    assert stats2.unchanged == {"stale": 2}  # A v2 after v3, A v1 again
    assert stats2.retractions == {"not_entitled": 1, "withdrawn": 3}
    async with Database(sqlite_url(tmp_path, "inboxes.db")) as db:
        boxes = await _inboxes(conn, topics, codec, db, keys)
    by_event = {r: {i["event_id"]: i for i in items} for r, items in boxes.items()}
    for r in (TFL, WG):
        assert by_event[r][a]["version"] == 3
        assert by_event[r][a]["payload"]["classification"] == "confidentiel"
        assert by_event[r][b]["retracted"] is True
        assert by_event[r][b]["reason"] == "withdrawn"
    assert by_event[CSILR][a]["retracted"] is True
    assert by_event[CSILR][a]["reason"] == "not_entitled"
    assert "payload" not in by_event[CSILR][a]
    # a full replay under another consumer group changes nothing downstream
    again = await _route(conn, topics, routing_setup, codec, ledger, group_id + "-replay", keys)
    assert (sum(again.deliveries.values()), sum(again.retractions.values())) == (0, 0)
    assert again.unchanged["duplicate"] + again.unchanged["stale"] == 6


async def _delivered(conn: KafkaConnection, codec: Codec, topic: str) -> list[tuple[str, dict[
        str, Any]]]:
    out = []
    async for rec in read_topic(conn, topic):
        name = codec.writer_of(rec.value).name
        out.append((name, codec.decode(rec.value, name)))
    return out


async def test_ledger_answers_who_holds_what_and_logs_the_question(
    conn, topics, routing_setup, codec, ledger, group_id, keys
):
    await _provision(conn, topics)
    e = "0c000000-0000-4000-8000-000000000003"
    async with Publisher(conn=conn, agency=Agency.POLLOC, topics=topics, codec=codec,
                         metrics=Metrics(CollectorRegistry()),
                         signer=keys.signer(Agency.POLLOC)) as pub:
        await pub.publish_many([_signal(e, 1, subject="P-9")])
    await _route(conn, topics, routing_setup, codec, ledger, group_id, keys)
    # oracle: what actually travelled on the delivery topics
    holders = set()
    for r in (TFL, CSILR, WG):
        for name, rec in await _delivered(conn, codec, topics.delivery(Recipient.parse(r))):
            if name == DELIVERY and rec["event_id"] == e:
                holders.add((r, rec["delivery_id"]))
    from datetime import UTC, datetime  # noqa: PLC0415

    rows = await ledger.consult(operator="comite-p", purpose="check", query="subject",
                                query_id="P-9", at=datetime.now(UTC))
    assert {(r["recipient"], r["delivery_id"]) for r in rows if r["holds"]} == holders
    assert [c["query_id"] for c in await ledger.consultations()] == ["P-9"]
    assert RETRACTION not in {n for r in (TFL,) for n, _ in
                              await _delivered(conn, codec, topics.delivery(Recipient.parse(r)))}


async def _project(conn: KafkaConnection, topics: Topics, codec: Codec, keys: KeyRing,
                   path: Path) -> None:
    """The common-database projector over what the router delivered; its outbox sends the
    removals (signed with the projector's key)."""
    metrics = StoreMetrics(CollectorRegistry())
    async with Database(sqlite_url(path, "ftf.db")) as db:
        outbox = Outbox(conn=conn, topics=topics, metrics=metrics, signer=keys.signer(PROJECTOR))
        async with Projector(conn=conn, db=db, topics=topics, codec=codec,
                             access=AccessConfig.load(DEFAULT_ACCESS_FILE), metrics=metrics,
                             registry=keys.registry, outbox=outbox) as projector:
            await projector.catch_up()
        await outbox.stop()


async def test_ocam_removal_retracts_from_every_holder_about_that_person_and_no_one_else(
    conn, topics, routing_setup, codec, ledger, group_id, tmp_path, keys
):
    await _provision(conn, topics)
    person = {"id": "P-7", "kind": "person", "statuses": ["FTF"]}
    other = {"id": "P-8", "kind": "person", "statuses": ["FTF"]}
    feeder = _signal("0d000000-0000-4000-8000-000000000001", 1, subject=person)
    control = _signal("0d000000-0000-4000-8000-000000000002", 1, subject=other)
    include = _signal("0d000000-0000-4000-8000-000000000003", 1, subject=person,
                      ocam={"action": "include", "threat_level": 3, "basis": "established"})
    remove = _signal("0d000000-0000-4000-8000-000000000004", 1, subject=person,
                     ocam={"action": "remove"})
    for agency, batch in ((Agency.VSSE, [feeder]), (Agency.POLFED, [control]),
                          (Agency.OCAM, [include, remove])):
        async with Publisher(conn=conn, agency=agency, topics=topics, codec=codec,
                             metrics=Metrics(CollectorRegistry()),
                             signer=keys.signer(agency)) as pub:
            await pub.publish_many(batch)
    await _route(conn, topics, routing_setup, codec, ledger, group_id, keys)
    await _project(conn, topics, codec, keys, tmp_path)
    stats = await _route(conn, topics, routing_setup, codec, ledger, group_id, keys)
    # oracle: what travelled on every delivery topic of the recipients involved
    delivered: set[tuple[str, str]] = set()
    retracted: set[tuple[str, str]] = set()
    for r in (TFL, CSILR, WG, "ftf-db", "wg:ftf"):
        for name, rec in await _delivered(conn, codec, topics.delivery(Recipient.parse(r))):
            if name == DELIVERY:
                delivered.add((rec["event_id"], r))
            elif name == RETRACTION:
                assert rec["reason"] == "removed_from_database"
                retracted.add((rec["event_id"], r))
    about_person = {str(s.event_id) for s in (feeder, include, remove)}
    assert {d for d in delivered if d[0] in about_person}, "the person's data was delivered"
    assert retracted == {d for d in delivered if d[0] in about_person}
    assert stats.retractions == {"removed_from_database": len(retracted)}


async def test_the_projector_applies_the_latest_version_whatever_the_order(
    conn, topics, routing_setup, codec, ledger, group_id, tmp_path, keys
):
    await _provision(conn, topics)
    e = "0f000000-0000-4000-8000-000000000001"
    person = {"id": "P-3", "kind": "person", "statuses": ["FTF"]}
    v1 = _signal(e, 1, subject=person)
    v2 = _signal(e, 2, subject={**person, "statuses": ["FTF", "HTF"]})
    async with Publisher(conn=conn, agency=Agency.VSSE, topics=topics, codec=codec,
                         metrics=Metrics(CollectorRegistry()),
                         signer=keys.signer(Agency.VSSE)) as pub:
        await pub.publish_many([v2])
        await pub.publish_many([v1, v1])  # the older version late, and replayed
    await _route(conn, topics, routing_setup, codec, ledger, group_id, keys)
    await _project(conn, topics, codec, keys, tmp_path)
    async with Database(sqlite_url(tmp_path, "ftf.db")) as db, db.engine.connect() as c:
        fiche = (await load_fiches(c, ["P-3"]))["P-3"]
    assert fiche.statuses == {"FTF", "HTF"}
    assert fiche.contributions == 1
async def test_withdrawals_with_ids_no_signal_could_carry_are_dead_lettered(
    conn, topics, routing_setup, codec, ledger, group_id, keys
):
    await _provision(conn, topics)
    topic, vsse = topics.ingress(Agency.VSSE), keys.signer(Agency.VSSE)

    def withdrawal(**overrides: Any) -> bytes:
        return Codec().encode(WITHDRAWAL, {
            "event_id": "0e000000-0000-4000-8000-000000000005", "agency": "vsse",
            "subject_id": "P-1", "version": 1, "withdrawn_at": datetime.now(UTC), **overrides})

    bad = {"event_id": withdrawal(event_id=FREE_TEXT_SUBJECT),
           "subject_id": withdrawal(subject_id=FREE_TEXT_SUBJECT),
           "version": withdrawal(version=0)}
    producer = make_producer(conn)
    await producer.start()
    try:
        for value in bad.values():
            await producer.send_and_wait(topic, value, key=b"P-1",
                                         headers=sign_headers(vsse, topic, value))
    finally:
        await producer.stop()
    await _route(conn, topics, routing_setup, codec, ledger, group_id, keys)
    dead = [codec.decode(r.value, DEAD_LETTER) async for r in read_topic(conn, topics.dead_letter)]
    assert sorted((d["reason"], d["detail"]) for d in dead) == sorted(
        ("invalid_signal", field) for field in bad)
    assert await ledger.load(["0e000000-0000-4000-8000-000000000005"]) == {}
