"""The consensus process on a real SQLite store, fed records directly (no broker): replays,
conflicting ids, unsigned records, a proposal that arrives after its deadline, and batch
boundaries that change nothing."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord
from prometheus_client import CollectorRegistry
from sqlalchemy import select, text

from consumers.jib.consensus import JibConsensus
from consumers.jib.consult import JibConsultations
from consumers.jib.panels import DEFAULT_PANELS_FILE, Panels
from consumers.jib.tables import jib_decisions
from consumers.metrics import StoreMetrics
from consumers.store import Database, sqlite_url
from consumers.store.tables import outbox
from planr.kafka import KafkaConnection
from planr.parties import JIB_OWNER
from planr.signing import sign_headers
from planr.topics import Topics
from producers.jib import encode_submission
from routing import DEFAULT_POLICY
from routing.jib import JibRouting
from routing.policy import Policy
from scenarios.jib import T0, concurrent_stream, jib_keys, proposal, tick, vote
from schemas.names import DEAD_LETTER, JIB_PROPOSAL, JIB_TICK, JIB_VOTE
from tests.test_store_helpers import dump

PANELS = Panels.load(DEFAULT_PANELS_FILE)
PANEL = PANELS.of("brussel")
TOPICS = Topics("unit")
TOPIC = TOPICS.jib_submissions
H = timedelta(hours=1)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    owners = [*PANEL, "nccn", "tfl:brussel", "tfl:liege", JIB_OWNER]
    return jib_keys(tmp_path_factory.mktemp("keys") / "keys", owners)


def consensus(db: Database, codec, keys, registry: CollectorRegistry | None = None
              ) -> JibConsensus:
    policy = Policy.load(DEFAULT_POLICY)
    metrics = StoreMetrics(registry or CollectorRegistry())
    return JibConsensus(conn=KafkaConnection("127.0.0.1:1"), db=db, topics=TOPICS, codec=codec,
                        metrics=metrics, registry=keys.registry,
                        panels=PANELS, routing=JibRouting(policy.document.jib, policy.version))


def signed(codec, keys, steps: list[tuple[str, str, dict[str, Any]]], start: int = 0,
           unsigned: frozenset[int] = frozenset()) -> list[ConsumerRecord]:
    out = []
    for i, (owner, name, record) in enumerate(steps, start=start):
        value = encode_submission(codec, keys.signers[owner], name, record)
        headers = [] if i in unsigned else sign_headers(keys.signers[owner], TOPIC, value)
        out.append(ConsumerRecord(TOPIC, 0, i, 1_767_225_600_000, 0, None, value, None, 0,
                                  len(value), headers))
    return out


async def feed(jib: JibConsensus, records: list[ConsumerRecord], size: int) -> None:
    for i in range(0, len(records), size):
        await jib.process({TopicPartition(TOPIC, 0): records[i : i + size]})


async def test_replays_are_skipped_and_a_reused_id_with_other_content_is_dead_lettered(
    tmp_path, codec, keys
):
    p = proposal("tfl:brussel", "brussel", "P-1", "insert", at=T0, deadline=T0 + 9 * H)
    v = vote(p["proposal_id"], "ocam", "approve", T0 + H)
    steps = [("tfl:brussel", JIB_PROPOSAL, p), ("ocam", JIB_VOTE, v)]
    other = {**p, "subject_id": "P-2"}  # same proposal id, other content
    records = signed(codec, keys, [*steps, *steps, ("tfl:brussel", JIB_PROPOSAL, other)])
    records += signed(codec, keys, [("vsse", JIB_VOTE, vote(p["proposal_id"], "vsse",
                                                            "approve", T0 + H))],
                      start=len(records), unsigned=frozenset({len(records)}))
    async with Database(sqlite_url(tmp_path, "jib.db")) as db:
        jib = consensus(db, codec, keys)
        await feed(jib, records, 2)
        async with db.engine.connect() as c:
            dead = [codec.decode(r.value, DEAD_LETTER) for r in (await c.execute(
                select(outbox).where(outbox.c.kind == "dead_letter"))).all()]
    assert jib.stats.duplicates == 2
    assert sorted((d["reason"], d["detail"], d["source_offset"]) for d in dead) == [
        ("event_id_conflict", "id already stored with other content", 4),
        ("unauthenticated", "unsigned", 5)]


async def test_a_proposal_arriving_after_the_clock_passed_its_deadline_expires_at_once(
    tmp_path, codec, keys
):
    p = proposal("tfl:liege", "liege", "P-1", "insert", at=T0, deadline=T0 + H)
    records = signed(codec, keys, [(JIB_OWNER, JIB_TICK, tick(T0 + 2 * H)),
                                   ("tfl:liege", JIB_PROPOSAL, p)])
    async with Database(sqlite_url(tmp_path, "jib.db")) as db:
        await feed(consensus(db, codec, keys), records, 1)
        async with db.engine.connect() as c:
            decided = (await c.execute(select(jib_decisions))).mappings().all()
    assert [(d["proposal_id"], d["outcome"], d["decided_at"]) for d in decided] == [
        (p["proposal_id"], "expired", T0 + H)]


async def test_batch_boundaries_change_nothing(tmp_path, codec, keys):
    proposers = (("tfl:brussel", "brussel"), ("vsse", "brussel"))
    steps = concurrent_stream(random.Random(7), 60, PANELS.panels, proposers, "nccn")
    records = signed(codec, keys, steps)
    dumps = []
    for size in (1, 7, len(records)):
        async with Database(sqlite_url(tmp_path / str(size), "jib.db")) as db:
            await feed(consensus(db, codec, keys), records, size)
            dumps.append(await dump(db))
    assert len(dumps[0]["jib_decisions"]) == 60
    assert dumps[0] == dumps[1] == dumps[2]


async def test_the_expiry_gauge_counts_open_proposals_due_within_a_day(tmp_path, codec, keys):
    now = datetime.now(UTC)
    soon = proposal("tfl:brussel", "brussel", "P-1", "insert", at=now, deadline=now + 2 * H)
    later = proposal("tfl:brussel", "brussel", "P-2", "insert", at=now,
                     deadline=now + timedelta(days=5))
    decided = proposal("vsse", "brussel", "P-3", "insert", at=now, deadline=now + H)
    steps = [("tfl:brussel", JIB_PROPOSAL, soon), ("tfl:brussel", JIB_PROPOSAL, later),
             ("vsse", JIB_PROPOSAL, decided),
             ("ocam", JIB_VOTE, vote(decided["proposal_id"], "ocam", "object", now))]
    async with Database(sqlite_url(tmp_path, "jib.db")) as db:
        registry = CollectorRegistry()
        await feed(consensus(db, codec, keys, registry), signed(codec, keys, steps), 10)
    assert registry.get_sample_value("planr_jib_proposals_expiring") == 1


async def test_the_open_gauge_counts_the_undecided_proposals_the_store_holds(
    tmp_path, codec, keys
):
    now = datetime.now(UTC)
    p1 = proposal("tfl:brussel", "brussel", "P-1", "insert", at=now, deadline=now + 2 * H)
    p2 = proposal("tfl:brussel", "brussel", "P-2", "insert", at=now, deadline=now + 50 * H)
    p3 = proposal("vsse", "brussel", "P-3", "insert", at=now, deadline=now + H)
    steps = [("tfl:brussel", JIB_PROPOSAL, p1), ("tfl:brussel", JIB_PROPOSAL, p2),
             ("vsse", JIB_PROPOSAL, p3),
             ("ocam", JIB_VOTE, vote(p3["proposal_id"], "ocam", "object", now))]
    async with Database(sqlite_url(tmp_path, "jib.db")) as db:
        registry = CollectorRegistry()
        await feed(consensus(db, codec, keys, registry), signed(codec, keys, steps), 10)
        async with db.engine.connect() as c:
            undecided = await c.scalar(text(
                "SELECT COUNT(*) FROM jib_proposals WHERE outcome IS NULL"))
    assert undecided == 2  # P-3 was rejected by ocam's objection
    assert registry.get_sample_value("planr_jib_proposals_open") == undecided
    assert registry.get_sample_value("planr_jib_proposals_expiring") == 1


async def test_each_jib_consultation_observes_one_time_sample_by_verb_and_answer_class(
    tmp_path, codec, keys
):
    p = proposal("tfl:brussel", "brussel", "P-1", "insert", at=T0, deadline=T0 + 9 * H)
    async with Database(sqlite_url(tmp_path, "jib.db")) as db:
        await feed(consensus(db, codec, keys), signed(codec, keys, [
            ("tfl:brussel", JIB_PROPOSAL, p)]), 1)
        registry = CollectorRegistry()
        answers = JibConsultations(db=db, codec=codec, metrics=StoreMetrics(registry))
        await answers.show("tfl:brussel", p["proposal_id"], T0)  # the proposer
        await answers.show("tfl:liege", p["proposal_id"], T0)  # not a participant
        await answers.members("tfl:brussel", T0)
    counts = {tuple(sorted(s.labels.items())): s.value for family in registry.collect()
              for s in family.samples if s.name == "planr_jib_consultation_seconds_count"}
    assert counts == {
        (("answer_class", "proposal"), ("verb", "show")): 1,
        (("answer_class", "no_access"), ("verb", "show")): 1,
        (("answer_class", "members"), ("verb", "members")): 1,
    }
