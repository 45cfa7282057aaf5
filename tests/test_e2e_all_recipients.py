"""End to end on the embedded broker: a generated scenario of 5,000 signals reaches every
recipient class exactly as the default policy decides offline, in minimised views, with one
audit entry per decision, and no signal text in the audit, the NTF aggregates, the logs or
the metrics."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy import select

from consumers.inbox import read_inbox
from consumers.ledger import StoreLedger
from consumers.metrics import StoreMetrics
from consumers.ntf.aggregator import NtfAggregator
from consumers.outbox import Outbox
from consumers.reader import read_topic
from consumers.store import Database, sqlite_url
from consumers.store.tables import ntf_counts
from planr.domain import Agency, Recipient, RecipientClass, all_recipients
from planr.kafka import KafkaConnection, make_consumer
from planr.signing import AGGREGATOR, ROUTER
from planr.telemetry import Metrics, configure_logging
from planr.topics import Topics, provision
from routing.engine import Facts
from routing.router import Router
from routing.setup import RoutingSetup
from scenarios.builders import SECRET_SUMMARY, publish_all
from scenarios.keys import KeyRing
from scenarios.signals import generate
from schemas.audit import candidate_decisions
from schemas.codec import Codec
from schemas.models import SignalIn
from schemas.names import DELIVERY, ROUTING_DECISION, view_schema_name
from tests.ntf_oracle import determined_by_totals

N_SIGNALS = 5_000
AGGREGATE_FIELDS = {"aggregate_id", "period", "arrondissement", "phenomenon", "count", "shown",
                    "suppressed", "threshold", "policy_version", "emitted_at"}
NTF_CLOCK = datetime(2027, 1, 1, tzinfo=UTC)


class Offline:
    """The default policy evaluated without Kafka: what each recipient must receive."""

    def __init__(self, setup: RoutingSetup, signals: list[tuple[Agency, SignalIn]]) -> None:
        self.deliveries: Counter[str] = Counter()
        self.decisions: dict[tuple[str, str], tuple[str, str]] = {}  # -> (outcome, rule)
        self.ntf_cells: Counter[tuple[str, str, str]] = Counter()
        self.ntf_signals = 0
        for agency, s in signals:
            facts = Facts.of(s.to_avro(agency))
            for d in setup.engine.decide(facts):
                rid = str(d.recipient)
                self.decisions[(facts.event_id, rid)] = ("allow" if d.allowed else "deny", d.rule)
                if not d.allowed:
                    continue
                if d.recipient.cls is RecipientClass.NTF:
                    self.ntf_signals += 1
                    month = s.occurred_at.astimezone(UTC).strftime("%Y-%m")
                    for ph in sorted(facts.phenomena) or ["none"]:
                        self.ntf_cells[(month, facts.arrondissement, ph)] += 1
                else:
                    self.deliveries[rid] += 1


def _scenario() -> list[tuple[Agency, SignalIn]]:
    """The generated scenario, each summary marked so that a leak is easy to find."""
    return [(agency, s.model_copy(update={"summary": f"{SECRET_SUMMARY} {i}"}))
            for i, (agency, s) in enumerate(generate(N_SIGNALS, seed=2026))]


async def _route(conn: KafkaConnection, topics: Topics, setup: RoutingSetup, metrics: Metrics,
                 group_id: str, keys: KeyRing, ledger: StoreLedger) -> None:
    router = Router(conn=conn, topics=topics, engine=setup.engine, views=setup.views,
                    codec=setup.codec, metrics=metrics, registry=keys.registry,
                    signer=keys.signer(ROUTER), group_id=group_id, ledger=ledger)
    async with router:
        stats = await router.run(until_idle=2.0)
        assert stats.signals == N_SIGNALS
        assert not stats.dead_letters


async def _count_ntf(conn: KafkaConnection, topics: Topics, setup: RoutingSetup, db: Database,
                     ntf_signals: int, keys: KeyRing) -> Counter[tuple[str, str, str]]:
    """The NTF aggregator over the routed history, on a clock at which every month of the
    scenario (January to November 2026) is closed; returns its stored counts."""
    metrics = StoreMetrics(CollectorRegistry())
    outbox = Outbox(conn=conn, topics=topics, metrics=metrics, signer=keys.signer(AGGREGATOR))
    aggregator = NtfAggregator(conn=conn, db=db, topics=topics, codec=setup.codec,
                               metrics=metrics, registry=keys.registry,
                               threshold=setup.policy.ntf_threshold,
                               policy_version=setup.policy.version, outbox=outbox,
                               now=lambda: NTF_CLOCK, interval=0.5)
    try:
        async with aggregator:
            await aggregator.run(until_idle=1.0)
    finally:
        await outbox.stop()
    assert aggregator.facts == ntf_signals
    async with db.engine.connect() as c:
        return Counter({(p, a, ph): n for p, a, ph, n in
                        (await c.execute(select(ntf_counts))).all()})


async def _read_deliveries(
    conn: KafkaConnection, topics: Topics, codec: Codec
) -> dict[str, list[dict[str, Any]]]:
    """Every delivery topic: through the recipients' inbox reader, except the 565 CSIL R
    topics, read by one consumer (a reader per topic costs ~0.1 s of metadata each)."""

    async def inbox(r: Recipient) -> tuple[str, list[dict[str, Any]]]:
        return str(r), [item async for item in read_inbox(conn, topics, codec, r)]

    csilr = [r for r in all_recipients() if r.cls is RecipientClass.CSILR]
    others = [r for r in all_recipients() if r.cls is not RecipientClass.CSILR]
    out = dict(await asyncio.gather(*(inbox(r) for r in others)))
    by_topic = await _read_topics(conn, [topics.delivery(r) for r in csilr])
    for r in csilr:
        out[str(r)] = []
        for value in by_topic[topics.delivery(r)]:
            envelope = codec.decode(value, DELIVERY)
            envelope["payload"] = codec.decode(envelope["payload"],
                                               view_schema_name(envelope["view"]))
            out[str(r)].append(envelope)
    return out


async def _read_topics(conn: KafkaConnection, names: list[str]) -> dict[str, list[bytes]]:
    """Every record now in the given topics, with one consumer and no group. The end of a
    partition is the high watermark of fetch responses (as in consumers.reader: Tansu's
    ListOffsets answers short of the end after a multi-record batch)."""
    consumer = make_consumer(conn, group_id=None)
    await consumer.start()
    try:
        await consumer.topics()
        tps = [TopicPartition(t, p) for t in names
               for p in sorted(consumer.partitions_for_topic(t) or ())]
        assert len(tps) >= len(names), "every topic exists"
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out: dict[str, list[bytes]] = {t: [] for t in names}
        remaining = set(tps)
        deadline = time.monotonic() + 30
        while remaining and time.monotonic() < deadline:
            for tp, records in (await consumer.getmany(*remaining, timeout_ms=500)).items():
                out[tp.topic].extend(r.value for r in records)
            for tp in list(remaining):
                high = consumer.highwater(tp)
                if high is not None and await consumer.position(tp) >= high:
                    remaining.discard(tp)
        assert not remaining, "reading the CSIL R topics stalled"
        return out
    finally:
        await consumer.stop()


@pytest.mark.kafka
@pytest.mark.timeout(180)
async def test_scenario_reaches_every_recipient_exactly_as_the_policy_decides_offline(
    conn: KafkaConnection, topics: Topics, group_id: str, metrics: Metrics, codec: Codec,
    routing_setup: RoutingSetup, capsys: pytest.CaptureFixture[str], keys: KeyRing,
    ledger: StoreLedger, tmp_path: Path,
):
    signals = _scenario()
    offline = Offline(routing_setup, signals)
    views = routing_setup.policy.document.views
    version = routing_setup.policy.version
    saved_logging = structlog.get_config()
    configure_logging("json", "debug")
    try:
        await provision(conn, topics)  # every topic: ~0.2 s on the embedded broker
        await publish_all(conn, topics, codec, metrics, signals, signers=keys.signers)
        await _route(conn, topics, routing_setup, metrics, group_id, keys, ledger)
        async with Database(sqlite_url(tmp_path, "ntf.db")) as ntf_db:
            ntf_counted = await _count_ntf(conn, topics, routing_setup, ntf_db,
                                           offline.ntf_signals, keys)
        inboxes = await _read_deliveries(conn, topics, codec)
        raw_audit = [rec.value async for rec in read_topic(conn, topics.audit)]
        raw_facts = [rec.value async for rec in read_topic(conn, topics.ntf_facts)]
    finally:
        structlog.configure(**saved_logging)
    captured = capsys.readouterr()

    # Per-recipient counts equal the policy evaluated offline; every class received something.
    ntf = inboxes.pop("ntf")
    got = Counter({rid: len(items) for rid, items in inboxes.items() if items})
    assert got == offline.deliveries
    classes = {Recipient.parse(rid).cls for rid in got} | ({RecipientClass.NTF} if ntf else set())
    assert classes == set(RecipientClass)
    assert sum(1 for rid in got if rid.startswith("csilr:")) >= 20

    # Each delivery is one the engine allows, with its rule, in exactly its class's view.
    seen_ids: set[str] = set()
    for rid, items in inboxes.items():
        view = routing_setup.policy.document.classes[Recipient.parse(rid).cls].view
        for item in items:
            assert item["recipient"] == rid
            assert offline.decisions[(item["event_id"], rid)] == ("allow", item["rule"])
            assert (item["policy_version"], item["view"]) == (version, view)
            assert set(item["payload"]) == set(views[view]), rid
            assert item["payload"]["event_id"] == item["event_id"]
            seen_ids.add(item["delivery_id"])
    assert len(seen_ids) == sum(offline.deliveries.values()), "delivery ids are unique"

    # The audit: one record per signal, with exactly one entry per candidate recipient, and
    # no content.
    records = [codec.decode(value, ROUTING_DECISION) for value in raw_audit]
    assert len(records) == len({r["event_id"] for r in records}) == N_SIGNALS
    audits = [row for r in records for row in candidate_decisions(r)]
    pairs = Counter((a["event_id"], a["recipient"]) for a in audits)
    assert set(pairs) == set(offline.decisions)
    assert max(pairs.values()) == 1
    for a in audits:
        assert (a["outcome"], a["rule"]) == offline.decisions[(a["event_id"], a["recipient"])]
        assert a["policy_version"] == version
    leak = SECRET_SUMMARY.encode()
    assert not [v for v in raw_audit if leak in v]

    # The NTF: every signal counted once, as offline; closed months published with no count
    # below the threshold shown, every shown count true, every non-zero cell present.
    assert ntf_counted == offline.ntf_cells
    assert all(set(a) == AGGREGATE_FIELDS for a in ntf)
    threshold = routing_setup.policy.ntf_threshold
    inner = {(a["period"], a["arrondissement"], a["phenomenon"]): a for a in ntf
             if "*" not in (a["arrondissement"], a["phenomenon"])}
    assert set(inner) == set(offline.ntf_cells)
    for cell, a in inner.items():
        if a["suppressed"]:
            assert a["count"] is None
            assert (a["shown"] == f"<{threshold}") == (offline.ntf_cells[cell] < threshold)
        else:
            assert a["count"] == offline.ntf_cells[cell] >= threshold
    for a in ntf:
        assert a["suppressed"] or a["count"] >= threshold
    for period in {a["period"] for a in ntf}:  # no suppressed entry solvable from the rest
        values: Counter[tuple[str, str]] = Counter()
        for (p, arr, ph), n in offline.ntf_cells.items():
            if p == period:
                for key in ((arr, ph), (arr, "*"), ("*", ph), ("*", "*")):
                    values[key] += n
        hidden = {(a["arrondissement"], a["phenomenon"]) for a in ntf
                  if a["period"] == period and a["suppressed"]}
        assert determined_by_totals(values, hidden) == set(), period
    assert len(raw_facts) == offline.ntf_signals
    assert not [v for v in raw_facts if leak in v]

    # Logs and metrics: ids and labels only.
    logs = captured.err + captured.out
    assert '"event": "router.started"' in logs
    assert SECRET_SUMMARY not in logs
    exposition = generate_latest(metrics.registry).decode()
    decided = metrics.registry.get_sample_value(
        "planr_routing_decisions_total", {"recipient_class": "csilr", "outcome": "allow"})
    assert decided == sum(n for rid, n in offline.deliveries.items() if rid.startswith("csilr:"))
    assert SECRET_SUMMARY not in exposition
