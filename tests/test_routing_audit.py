"""The routing audit on the real embedded broker: one record per routed signal, listing
exactly the candidates decided for it, each with its rule, rules, outcome, view and delivery
id; the deliveries written are those its allow entries name; the decision and denial metrics
are the counts of its entries."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

import pytest

from consumers.ledger import StoreLedger
from consumers.reader import read_topic
from planr.domain import Recipient
from planr.kafka import KafkaConnection
from planr.signing import ROUTER
from planr.telemetry import Metrics
from planr.topics import Topics, provision
from routing.engine import Facts
from routing.outputs import DELIVERY_NS
from routing.router import Router
from routing.setup import RoutingSetup
from scenarios.builders import publish_all
from scenarios.keys import KeyRing
from scenarios.signals import generate
from schemas.audit import candidate_decisions
from schemas.codec import Codec
from schemas.names import DELIVERY, ROUTING_DECISION

pytestmark = pytest.mark.kafka


def _expected(routing_setup: RoutingSetup, facts: Facts) -> list[tuple[object, ...]]:
    """The oracle: each candidate decided one at a time by the engine's plain evaluation
    (``decide_one``), its delivery id from the standard library's UUIDv5."""
    engine = routing_setup.engine
    out: list[tuple[object, ...]] = []
    for r in engine.candidates(facts):
        d = engine.decide_one(facts, r)
        did = str(uuid.uuid5(DELIVERY_NS, f"{facts.event_id}|{r}")) if d.allowed else None
        out.append((str(r), "allow" if d.allowed else "deny", d.rule, list(d.rules),
                    did, engine.view_of(r)))
    return out


async def test_one_audit_record_per_signal_lists_exactly_the_decided_candidates(
    conn: KafkaConnection, topics: Topics, group_id: str, metrics: Metrics,
    codec: Codec, routing_setup: RoutingSetup, keys: KeyRing, ledger: StoreLedger,
):
    await provision(conn, topics)
    signals = list(generate(120, seed=11))
    await publish_all(conn, topics, codec, metrics, signals, signers=keys.signers)
    router = Router(conn=conn, topics=topics, engine=routing_setup.engine,
                    views=routing_setup.views, codec=codec, metrics=metrics,
                    registry=keys.registry, signer=keys.signer(ROUTER), group_id=group_id,
                    ledger=ledger)
    async with router:
        stats = await router.run(until_idle=2.0)
    assert stats.signals == len(signals)

    records = [codec.decode(r.value, ROUTING_DECISION)
               async for r in read_topic(conn, topics.audit)]
    by_event = {a["event_id"]: a for a in records}
    assert len(records) == len(by_event) == len(signals), "one audit record per signal"
    rows: list[dict[str, Any]] = []
    for agency, s in signals:
        facts = Facts.of(s.to_avro(agency))
        record = by_event[str(s.event_id)]
        assert (record["agency"], record["version"], record["policy_version"]) == (
            agency.value, 1, routing_setup.policy.version)
        got = [(e["recipient"], e["outcome"], e["rule"], e["rules"], e["delivery_id"],
                e["view"]) for e in record["decisions"]]
        assert got == _expected(routing_setup, facts), s.event_id
        rows.extend(candidate_decisions(record))
    assert stats.audits == len(rows)

    # every allowed entry of a recipient view is a delivery with that id, rule and rules
    allowed = [r for r in rows if r["outcome"] == "allow"
               and r["view"] not in routing_setup.views.aggregate_views]
    assert allowed
    for rid in sorted({str(r["recipient"]) for r in allowed}):
        topic = topics.delivery(Recipient.parse(rid))
        got_d = {(d["event_id"], d["delivery_id"], d["rule"], tuple(d["rules"]))
                 for d in [codec.decode(rec.value, DELIVERY)
                           async for rec in read_topic(conn, topic)]}
        want = {(r["event_id"], r["delivery_id"], r["rule"], tuple(r["rules"]))
                for r in allowed if r["recipient"] == rid}
        assert got_d == want, rid

    decided = Counter((str(r["recipient"]).partition(":")[0], r["outcome"]) for r in rows)
    for (cls_, outcome), n in decided.items():
        assert metrics.registry.get_sample_value(
            "planr_routing_decisions_total",
            {"recipient_class": cls_, "outcome": outcome}) == n, (cls_, outcome)
    denied = Counter((str(r["recipient"]).partition(":")[0], r["rule"])
                     for r in rows if r["outcome"] == "deny")
    assert len(denied) >= 2
    for (cls_, rule), n in denied.items():
        assert metrics.registry.get_sample_value(
            "planr_routing_denials_total", {"recipient_class": cls_, "rule": rule}) == n
    allowed_by_rule = Counter((str(r["recipient"]).partition(":")[0], r["rule"])
                              for r in rows if r["outcome"] == "allow")
    assert len(allowed_by_rule) >= 2
    for (cls_, rule), n in allowed_by_rule.items():
        assert metrics.registry.get_sample_value(
            "planr_routing_allowances_total", {"recipient_class": cls_, "rule": rule}) == n
