"""End to end on the real embedded broker: agencies publish, the router decides, each local
taskforce receives exactly what it is entitled to, every decision is audited, bad records
end in the dead-letter topic and the router keeps going."""

from __future__ import annotations

from collections import Counter

import pytest

from consumers.ledger import StoreLedger
from consumers.reader import read_topic
from planr import territory
from planr.domain import Agency, Classification, Recipient, RecipientClass
from planr.kafka import KafkaConnection, make_producer
from planr.signing import ROUTER, sign_headers
from planr.telemetry import Metrics
from planr.topics import Topics, provision
from routing.engine import Facts
from routing.router import Router
from routing.setup import RoutingSetup
from scenarios.builders import SECRET_SUMMARY, make_signal, publish_all
from scenarios.keys import KeyRing
from schemas.audit import candidate_decisions
from schemas.codec import Codec
from schemas.models import SignalIn
from schemas.names import DEAD_LETTER, DELIVERY, ROUTING_DECISION, SIGNAL

pytestmark = pytest.mark.kafka  # every test here starts or uses a broker

# Communes of four arrondissements, and a prison.
PLACES = [
    {"municipality": "21004"},  # Brussel -> brussel
    {"municipality": "11002"},  # Antwerpen -> antwerpen
    {"municipality": "62063"},  # Liège -> liege
    {"municipality": "44021"},  # Gent -> oost-vlaanderen
    {"prison": "centrale-gevangenis-leuven"},  # Leuven -> leuven
]
TFL_CEILING = Classification.SECRET  # ceiling-tfl in routing/policy.yaml


def _scenario() -> list[tuple[Agency, SignalIn]]:
    agencies = [Agency.VSSE, Agency.POLFED, Agency.OCAM]
    return [
        (
            agencies[i % 3],
            make_signal(
                location=PLACES[i % len(PLACES)],
                classification=list(Classification)[i % 5].value,
                tlp=["clear", "green", "amber"][i % 3],
                handling=["H0", "H1", "H3"][i % 3],
                subject={"id": f"P-{i % 7}", "kind": "person", "statuses": []},
            ),
        )
        for i in range(60)
    ]


def _expected_tfl(signals: list[tuple[Agency, SignalIn]]) -> dict[str, set[str]]:
    """Independent statement of the rule: same arrondissement, at or below the ceiling."""
    out: dict[str, set[str]] = {a: set() for a in territory.arrondissement_ids()}
    for _, s in signals:
        place = territory.resolve(municipality=s.location.municipality, prison=s.location.prison)
        assert place is not None
        if s.classification.rank <= TFL_CEILING.rank:
            out[place.arrondissement].add(str(s.event_id))
    return out


async def test_each_tfl_receives_exactly_its_signals_and_every_decision_is_audited(
    conn: KafkaConnection, topics: Topics, group_id: str, metrics: Metrics,
    codec: Codec, routing_setup: RoutingSetup, keys: KeyRing, ledger: StoreLedger,
):
    await provision(conn, topics)
    signals = _scenario()
    await publish_all(conn, topics, codec, metrics, signals[:40], signers=keys.signers)

    # Bad input straight on an ingress topic, signed by the topic's owner (so that it passes
    # the signature check): garbage, and a valid vsse signal on ocam's topic.
    raw = make_producer(conn)
    await raw.start()
    try:
        vsse, ocam = topics.ingress(Agency.VSSE), topics.ingress(Agency.OCAM)
        await raw.send_and_wait(vsse, b"\x00garbage", key=b"k", headers=sign_headers(
            keys.signer(Agency.VSSE), vsse, b"\x00garbage"))
        forged = codec.encode(SIGNAL, make_signal().to_avro(Agency.VSSE))
        await raw.send_and_wait(ocam, forged,
                                headers=sign_headers(keys.signer(Agency.OCAM), ocam, forged))
    finally:
        await raw.stop()
    # routing must go on
    await publish_all(conn, topics, codec, metrics, signals[40:], signers=keys.signers)

    router = Router(conn=conn, topics=topics, engine=routing_setup.engine,
                    views=routing_setup.views, codec=codec, metrics=metrics,
                    registry=keys.registry, signer=keys.signer(ROUTER), group_id=group_id,
                    ledger=ledger)
    async with router:
        stats = await router.run(until_idle=2.0)
    assert stats.signals == len(signals)
    assert stats.dead_letters == Counter({"bad_header": 1, "agency_mismatch": 1})

    expected = _expected_tfl(signals)
    assert sum(bool(v) for v in expected.values()) >= 3
    for arr, want in expected.items():
        got = [codec.decode(r.value, DELIVERY)
               async for r in read_topic(conn, topics.delivery(Recipient(RecipientClass.TFL, arr)))]
        assert {d["event_id"] for d in got} == want, arr
        assert len(got) == len(want), f"duplicate deliveries to tfl:{arr}"
        for d in got:
            assert d["recipient"] == f"tfl:{arr}"
            assert d["rule"] == "tfl-territory"
            assert d["policy_version"] == routing_setup.policy.version
            payload = routing_setup.views.decode("tfl", d["payload"])
            assert payload["event_id"] == d["event_id"]

    records = [codec.decode(r.value, ROUTING_DECISION)
               async for r in read_topic(conn, topics.audit)]
    assert Counter(a["event_id"] for a in records) == Counter(
        str(s.event_id) for _, s in signals), "one audit record per signal"
    audits = [row for a in records for row in candidate_decisions(a)]
    pairs = Counter((a["event_id"], a["recipient"]) for a in audits)
    assert all(n == 1 for n in pairs.values()), "one audit entry per (signal, recipient)"
    for _, s in signals:
        candidates = routing_setup.engine.candidates(
            Facts.of(s.to_avro(Agency.VSSE))
        )
        for r in candidates:
            assert (str(s.event_id), str(r)) in pairs
    assert len(audits) == sum(
        len(routing_setup.engine.candidates(
            Facts.of(s.to_avro(Agency.VSSE))))
        for _, s in signals
    )
    tfl_audits = {(a["event_id"], a["recipient"]): a for a in audits
                  if a["recipient"].startswith("tfl:")}
    for arr, want in expected.items():
        for (event_id, rid), a in tfl_audits.items():
            if rid == f"tfl:{arr}":
                assert (a["outcome"] == "allow") == (event_id in want)
                assert a["rule"] == ("tfl-territory" if event_id in want else "ceiling-tfl")
    raw_audit = [r.value async for r in read_topic(conn, topics.audit)]
    assert raw_audit
    assert not [v for v in raw_audit if SECRET_SUMMARY.encode() in v]

    dead = [codec.decode(r.value, DEAD_LETTER) async for r in read_topic(conn, topics.dead_letter)]
    assert sorted(d["reason"] for d in dead) == ["agency_mismatch", "bad_header"]
    garbage = next(d for d in dead if d["reason"] == "bad_header")
    assert garbage["original"] == b"\x00garbage"
    assert garbage["source_topic"] == topics.ingress(Agency.VSSE)

    assert metrics.registry.get_sample_value(
        "planr_dead_letters_total", {"reason": "agency_mismatch"}) == 1
    assert metrics.registry.get_sample_value(
        "planr_routing_latency_seconds_count") == len(signals)
    allowed_tfl = metrics.registry.get_sample_value(
        "planr_routing_decisions_total", {"recipient_class": "tfl", "outcome": "allow"})
    assert allowed_tfl == sum(len(v) for v in expected.values())


async def test_restarted_router_resumes_after_committed_offsets(
    conn: KafkaConnection, topics: Topics, group_id: str, metrics: Metrics,
    codec: Codec, routing_setup: RoutingSetup, keys: KeyRing, ledger: StoreLedger,
):
    await provision(conn, topics, [*topics.all_ingress(), topics.audit, topics.dead_letter,
                                   topics.ntf_facts,
                                   *(topics.delivery(Recipient(RecipientClass.TFL, a))
                                     for a in territory.arrondissement_ids())])
    first = [(Agency.VSSE, make_signal()) for _ in range(5)]
    second = [(Agency.VSSE, make_signal()) for _ in range(3)]

    def router() -> Router:
        return Router(conn=conn, topics=topics, engine=routing_setup.engine,
                      views=routing_setup.views, codec=codec, metrics=metrics,
                      registry=keys.registry, signer=keys.signer(ROUTER), group_id=group_id,
                      ledger=ledger)

    await publish_all(conn, topics, codec, metrics, first, signers=keys.signers)
    async with router() as r:
        assert (await r.run(until_idle=1.0)).signals == 5
    await publish_all(conn, topics, codec, metrics, second, signers=keys.signers)
    async with router() as r:
        assert (await r.run(until_idle=1.0)).signals == 3
    brussel = topics.delivery(Recipient(RecipientClass.TFL, "brussel"))
    delivered = [codec.decode(x.value, DELIVERY)["event_id"]
                 async for x in read_topic(conn, brussel)]
    assert sorted(delivered) == sorted(str(s.event_id) for _, s in first + second)
