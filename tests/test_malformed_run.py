"""A malformed-input run on the real broker (issue "Trust"): 10,000 bad records of every kind
(random bytes, truncated Avro, unknown fingerprints, records of other schemas, valid Avro with
invalid fields, unknown communes and prisons, a claimed agency that does not own the topic,
oversize values and keys, reused event ids, forged signatures, forged deliveries) mixed with
2,000 valid signed signals, written straight to the topics while the router runs.

Checked: every bad record is dead-lettered exactly once with the reason (and, where the
contract fixes it, the detail) the generator intended, with its original bytes; the router
never stops; the deliveries and audit records are exactly what the engine decides offline for
the valid signals; the ledger, the common database and the inboxes hold nothing of a bad
record. Then a log audit of the whole run: no summary, free-text subject or country, key
material or password in any log line, metric label, audit record or dead-letter detail.

Oracles: the generator's intent (:mod:`scenarios.malformed`), the engine evaluated offline,
and the topics and tables read directly.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiokafka import AIOKafkaProducer, ConsumerRecord, TopicPartition
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client import CollectorRegistry, generate_latest
from pydantic import SecretStr
from sqlalchemy import select

from consumers.ftf.governance import DEFAULT_ACCESS_FILE, AccessConfig
from consumers.ftf.projector import Projector
from consumers.inbox_rows import read_stored
from consumers.inboxes import InboxService
from consumers.ledger import StoreLedger
from consumers.metrics import StoreMetrics
from consumers.outbox import DEAD_LETTER_KIND, Outbox
from consumers.reader import read_topic
from consumers.store import Database, sqlite_url
from consumers.store.tables import applied_events, contributions, fiches, ledger_events
from planr.domain import Agency, Recipient, RecipientClass, all_recipients
from planr.kafka import KafkaConnection, make_consumer, make_producer
from planr.signing import INBOXES, PROJECTOR, ROUTER
from planr.telemetry import Metrics, configure_logging
from planr.topics import Topics, provision
from routing.engine import Facts
from routing.router import Router, RouterStats
from routing.setup import RoutingSetup
from scenarios.builders import SECRET_SUMMARY
from scenarios.invalid_fields import FREE_TEXT_COUNTRY, FREE_TEXT_SUBJECT
from scenarios.keys import KeyRing
from scenarios.malformed import MalformedRun, Record, malformed_run
from schemas.audit import candidate_decisions
from schemas.codec import Codec
from schemas.dead_letter import MAX_COPIED_BYTES, NOT_COPIED
from schemas.models import SignalIn
from schemas.names import DEAD_LETTER, DELIVERY, NTF_FACT, RETRACTION, ROUTING_DECISION

pytestmark = pytest.mark.kafka

N_BAD, N_VALID = 10_000, 2_000
INBOX_RECIPIENTS = [Recipient.parse(r) for r in ("tfl:brussel", "wg:salafism", "csilr:42004")]
PASSWORD = "SASL-PASSWORD-MUST-NOT-LEAK-7f3a"
Position = tuple[str, int, int]


# ---- writing and waiting ------------------------------------------------------------------


async def write(conn: KafkaConnection, records: list[Record]) -> list[Position]:
    """Write records as they are (headers included), with a producer that allows records of
    4 MiB, as a hostile client could; the (topic, partition, offset) of each."""
    producer = AIOKafkaProducer(**conn.client_kwargs(), acks="all", linger_ms=5,
                                max_request_size=4 * 1024 * 1024)
    await producer.start()
    try:
        futures = [await producer.send(r.topic, value=r.value, key=r.key, headers=r.headers)
                   for r in records]
        sent = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return [(m.topic, m.partition, m.offset) for m in sent]


async def until(done: Callable[[], bool], task: asyncio.Task[Any], limit: float) -> None:
    """Wait until ``done()``; the task must keep running meanwhile."""
    deadline = time.monotonic() + limit
    while not done():
        assert not task.done(), f"the router stopped: {task.exception()!r}"
        assert time.monotonic() < deadline, "the router did not get through the records"
        await asyncio.sleep(0.05)


async def route(conn: KafkaConnection, router: Router, run: MalformedRun, topics: Topics
                ) -> tuple[RouterStats, dict[Position, Record]]:
    """Write wave 1 while the router runs, wait until it committed every ingress record, then
    wave 2 (ids reused from wave 1); stop the router. Each record by its position."""
    ingress = set(topics.all_ingress())
    at: dict[Position, Record] = {}
    async with router:
        task = asyncio.create_task(router.run())
        expected = 0
        for wave in run.waves:
            at.update(zip(await write(conn, wave), wave, strict=True))
            expected += sum(1 for r in wave if r.topic in ingress)

            def committed(n: int = expected) -> bool:
                return router.stats.records >= n

            await until(committed, task, limit=90)
        router.request_stop()
        stats = await task
    return stats, at


# ---- reading ------------------------------------------------------------------------------


async def read_all(conn: KafkaConnection, names: list[str]) -> list[ConsumerRecord]:
    """Every record now in the given topics, with one consumer and no group (the end of a
    partition is the high watermark fetch responses carry; see consumers.reader)."""
    consumer = make_consumer(conn, group_id=None)
    await consumer.start()
    try:
        await consumer.topics()
        tps = [TopicPartition(t, p) for t in names
               for p in sorted(consumer.partitions_for_topic(t) or ())]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out: list[ConsumerRecord] = []
        remaining, deadline = set(tps), time.monotonic() + 60
        while remaining and time.monotonic() < deadline:
            for records in (await consumer.getmany(*remaining, timeout_ms=500)).values():
                out.extend(records)
            for tp in list(remaining):
                high = consumer.highwater(tp)
                if high is not None and await consumer.position(tp) >= high:
                    remaining.discard(tp)
        assert not remaining, "reading the delivery topics stalled"
        return out
    finally:
        await consumer.stop()


def offline(setup: RoutingSetup, signals: list[tuple[Agency, SignalIn]]
            ) -> tuple[dict[tuple[str, str], tuple[str, str]], int]:
    """The engine's decision on every (event, candidate recipient) of the valid signals, as
    (outcome, rule), and the number of NTF facts."""
    decisions: dict[tuple[str, str], tuple[str, str]] = {}
    ntf = 0
    for agency, s in signals:
        facts = Facts.of(s.to_avro(agency))
        for d in setup.engine.decide(facts):
            decisions[(facts.event_id, str(d.recipient))] = (
                "allow" if d.allowed else "deny", d.rule)
            ntf += d.allowed and d.recipient.cls is RecipientClass.NTF
    return decisions, ntf


def allowed_to(decisions: dict[tuple[str, str], tuple[str, str]], recipient: str) -> set[str]:
    return {e for (e, r), (outcome, _) in decisions.items()
            if r == recipient and outcome == "allow"}


# ---- the dead letters ---------------------------------------------------------------------


def dead_letter_mismatches(at: dict[Position, Record], dead: list[dict[str, Any]]
                           ) -> Counter[str]:
    """What differs from the generator's intent, counted by category (empty: all as meant):
    every bad record dead-lettered exactly once, with its reason, its detail when fixed, and
    its original bytes (or, above MAX_COPIED_BYTES, none and a detail that says so)."""
    by_position: dict[Position, list[dict[str, Any]]] = {}
    for d in dead:
        pos = (d["source_topic"], d["source_partition"], d["source_offset"])
        by_position.setdefault(pos, []).append(d)
    wrong: Counter[str] = Counter()
    for pos, rec in at.items():
        got = by_position.pop(pos, [])
        if rec.expected is None:
            wrong["valid signal dead-lettered"] += len(got)
            continue
        if len(got) != 1:
            wrong[f"{rec.category}: {len(got)} dead letters"] += 1
            continue
        d = got[0]
        detail, value, key = d["detail"], rec.value or b"", rec.key
        if len(value) + len(key or b"") > MAX_COPIED_BYTES:
            detail, _, _ = detail.partition(NOT_COPIED)
            value, key = b"", None
        if d["reason"] != rec.expected.reason:
            wrong[f"{rec.category}: {rec.expected.reason} became {d['reason']}"] += 1
        elif rec.expected.detail is not None and detail != rec.expected.detail:
            wrong[f"{rec.category}: detail {detail!r}, not {rec.expected.detail!r}"] += 1
        elif (d["original"], d["original_key"]) != (value, key):
            wrong[f"{rec.category}: original not kept"] += 1
    wrong["dead letters of records never written"] += len(by_position)
    return +wrong


# ---- the sinks ----------------------------------------------------------------------------


async def run_sinks(conn: KafkaConnection, topics: Topics, codec: Codec, keys: KeyRing,
                    metrics: StoreMetrics, tmp_path: Path) -> dict[str, Any]:
    """The projector and the inbox service (three inboxes) catch up, each in its own store,
    each sending its dead letters; what they stored."""
    access = AccessConfig.load(DEFAULT_ACCESS_FILE)
    async with (Database(sqlite_url(tmp_path, "ftf.db")) as ftf,
                Database(sqlite_url(tmp_path, "inboxes.db")) as inboxes):
        p_out = Outbox(conn=conn, topics=topics, metrics=metrics, signer=keys.signer(PROJECTOR))
        i_out = Outbox(conn=conn, topics=topics, metrics=metrics, signer=keys.signer(INBOXES),
                       kinds=[DEAD_LETTER_KIND])
        projector = Projector(conn=conn, db=ftf, topics=topics, codec=codec, access=access,
                              metrics=metrics, registry=keys.registry, outbox=p_out)
        service = InboxService(conn=conn, db=inboxes, topics=topics, codec=codec,
                               metrics=metrics, registry=keys.registry,
                               recipients=INBOX_RECIPIENTS, outbox=i_out)
        async with projector, service:
            stats = await asyncio.gather(projector.catch_up(), service.catch_up())
        await p_out.stop()
        await i_out.stop()
        async with ftf.engine.connect() as c:
            out: dict[str, Any] = {
                "applied": set((await c.execute(select(applied_events.c.event_id))).scalars()),
                "fiches": set((await c.execute(select(fiches.c.subject_id))).scalars()),
                "occurred": list((await c.execute(
                    select(contributions.c.occurred_at))).scalars()),
            }
        out["inboxes"] = {str(r): {item["event_id"] for _, item in
                                   await read_stored(inboxes, codec, r)}
                          for r in INBOX_RECIPIENTS}
    out["bad"] = {"projector": stats[0].bad, "inboxes": stats[1].bad}
    return out


# ---- the leak audit -----------------------------------------------------------------------


def key_needles(keys: KeyRing, forger_keys: Iterable[bytes]) -> list[str]:
    """Every form the test keys' private material could take in text: the PEM files, their
    base64 body, the raw private key in hex and base64 (the forgers' made-up keys too)."""
    needles: list[str] = []
    raws = list(forger_keys)
    for path in keys.paths.values():
        pem = path.read_text()
        needles.append(pem)
        needles.extend(line for line in pem.splitlines() if line and "-----" not in line)
        key = serialization.load_pem_private_key(pem.encode(), password=None)
        assert isinstance(key, Ed25519PrivateKey)
        raws.append(key.private_bytes(serialization.Encoding.Raw,
                                      serialization.PrivateFormat.Raw,
                                      serialization.NoEncryption()))
    for raw in raws:
        needles += [raw.hex(), base64.b64encode(raw).decode(),
                    base64.urlsafe_b64encode(raw).decode().rstrip("=")]
    return needles


async def refused_login(conn: KafkaConnection) -> str:
    """A client configured with a SASL password the embedded broker cannot accept: its
    error, for the audit (the broker admits no SASL login, so the password is refused)."""
    sasl = KafkaConnection(bootstrap_servers=conn.bootstrap_servers,
                           security_protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-512",
                           sasl_username="planr-router", sasl_password=SecretStr(PASSWORD))
    producer = make_producer(sasl)
    try:
        await producer.start()
    except Exception as exc:  # noqa: BLE001 - whatever the client raises is audited
        return f"{exc!s} {exc!r} {sasl!r}"
    finally:
        await producer.stop()
    pytest.fail("the embedded broker accepted a SASL login")


# ---- the run ------------------------------------------------------------------------------


@pytest.mark.timeout(240)
async def test_malformed_run_dead_letters_every_bad_record_and_routes_every_valid_one(
    conn: KafkaConnection, topics: Topics, group_id: str, metrics: Metrics,
    routing_setup: RoutingSetup, keys: KeyRing, ledger: StoreLedger, tmp_path: Path,
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
):
    codec = routing_setup.codec
    run = malformed_run(topics, codec, keys.signers, bad=N_BAD, valid=N_VALID,
                        published_at=datetime.now(UTC) - timedelta(minutes=1))
    bad, valid = run.bad, run.valid
    assert (len(bad), len(valid)) == (N_BAD, N_VALID)
    decisions, ntf_facts = offline(routing_setup, valid)
    caplog.set_level(logging.INFO)
    saved_logging = structlog.get_config()
    configure_logging("json", "debug")
    store_registry = CollectorRegistry()
    store_metrics = StoreMetrics(store_registry)
    try:
        await provision(conn, topics)
        router = Router(conn=conn, topics=topics, engine=routing_setup.engine,
                        views=routing_setup.views, codec=codec, metrics=metrics,
                        registry=keys.registry, signer=keys.signer(ROUTER), group_id=group_id,
                        ledger=ledger)
        stats, at = await route(conn, router, run, topics)
        sinks = await run_sinks(conn, topics, codec, keys, store_metrics, tmp_path)
        login_error = await refused_login(conn)
        dead = [codec.decode(r.value, DEAD_LETTER)
                async for r in read_topic(conn, topics.dead_letter)]
        raw_audit = [r.value async for r in read_topic(conn, topics.audit)]
        facts = [r async for r in read_topic(conn, topics.ntf_facts)]
        delivered = await read_all(conn, [topics.delivery(r) for r in all_recipients()
                                          if r.cls is not RecipientClass.NTF])
        async with ledger.db.engine.connect() as c:
            ledgered = dict((await c.execute(
                select(ledger_events.c.event_id, ledger_events.c.agency))).all())
    finally:
        structlog.configure(**saved_logging)
    captured = capsys.readouterr()

    # Every bad record dead-lettered once, as intended, with its bytes; the router went on.
    assert dead_letter_mismatches(at, dead) == Counter()
    assert len(dead) == N_BAD
    assert stats.signals == N_VALID
    assert sum(stats.dead_letters.values()) == sum(
        1 for r in bad if r.topic in set(topics.all_ingress()))
    assert not stats.retractions
    forged = Counter(r.topic for r in bad if r.category == "forged_delivery")
    assert sinks["bad"] == {
        "projector": forged[topics.delivery(Recipient(RecipientClass.FTF_DB))],
        "inboxes": forged[topics.delivery(INBOX_RECIPIENTS[0])]}

    # Deliveries and audit: exactly the engine's decisions on the valid signals.
    bad_positions = {pos for pos, r in at.items() if r.expected is not None}
    deliveries: Counter[tuple[str, str]] = Counter()
    for rec in delivered:
        if (rec.topic, rec.partition, rec.offset) in bad_positions:
            continue
        assert codec.writer_of(rec.value).name != RETRACTION
        d = codec.decode(rec.value, DELIVERY)
        deliveries[(d["event_id"], d["recipient"])] += 1
        assert decisions[(d["event_id"], d["recipient"])] == ("allow", d["rule"])
    assert max(deliveries.values()) == 1
    assert set(deliveries) == {k for k, (o, _) in decisions.items()
                               if o == "allow" and k[1] != "ntf"}
    records = [codec.decode(v, ROUTING_DECISION) for v in raw_audit]
    versions = [(r["event_id"], r["version"]) for r in records]
    assert len(versions) == len(set(versions))  # one audit record per routed version
    audits = [row for r in records for row in candidate_decisions(r)]
    assert Counter((a["event_id"], a["recipient"]) for a in audits) == Counter(set(decisions))
    assert all((a["outcome"], a["rule"]) == decisions[(a["event_id"], a["recipient"])]
               for a in audits)
    assert len(facts) == ntf_facts
    assert {codec.decode(f.value, NTF_FACT)["event_id"] for f in facts} <= {
        str(s.event_id) for _, s in valid}

    # Nothing of a bad record was stored: ledger, common database, inboxes.
    owners = {str(s.event_id): a.value for a, s in valid}
    assert ledgered == owners  # reused ids kept their first owner: nothing was taken over
    assert sinks["applied"] == allowed_to(decisions, "ftf-db")
    assert FREE_TEXT_SUBJECT not in sinks["fiches"]
    assert sinks["fiches"] <= {s.subject.id for _, s in valid}
    assert max(sinks["occurred"]) < datetime.now(UTC)  # no 2099 contribution
    for r in INBOX_RECIPIENTS:
        assert sinks["inboxes"][str(r)] == allowed_to(decisions, str(r)), r
        assert sinks["inboxes"][str(r)], f"{r} received nothing: pick a busier inbox"

    # The audit of the whole run's text: nothing that is content, key material or password.
    originals = b"".join(d["original"] for d in dead)
    for shown in (FREE_TEXT_SUBJECT, FREE_TEXT_COUNTRY, SECRET_SUMMARY):
        assert shown.encode() in originals  # they were sent, so their absence means something
    texts = {
        "logs": captured.err + captured.out + caplog.text,
        "metrics": (generate_latest(metrics.registry)
                    + generate_latest(store_registry)).decode(),
        "audit": repr(audits) + b"".join(raw_audit).decode("utf-8", "replace"),
        "dead-letter reasons and details": "\n".join(
            f"{d['reason']} {d['detail']}" for d in dead),
        "errors": login_error,
    }
    assert '"event": "router.dead_letter"' in texts["logs"]
    assert "planr_dead_letters_total" in texts["metrics"]
    needles = [SECRET_SUMMARY, FREE_TEXT_SUBJECT, FREE_TEXT_COUNTRY, "informant", "Peeters",
               PASSWORD, *key_needles(keys, run.forger_keys)]
    leaks = {(where, n[:24]) for where, text in texts.items() for n in needles if n in text}
    assert not leaks

