"""The JIB's consensus workflow on the real broker: signed proposals, votes and ticks in;
decisions, need-to-know deliveries, audit records and the JIB's store out.

The oracle is written here from the rules of the issue (all approve: adopted; the first
objection: rejected; the deadline: expired; late, duplicate, outsider votes refused with a
reason), not from the consensus code.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
import structlog
from prometheus_client import CollectorRegistry
from sqlalchemy import select

from consumers.jib.consensus import JibConsensus
from consumers.jib.panels import DEFAULT_PANELS_FILE, Panels
from consumers.jib.tables import jib_decisions, jib_members, jib_proposals, jib_votes
from consumers.metrics import StoreMetrics
from consumers.outbox import Outbox
from consumers.reader import read_topic
from consumers.store import Database, sqlite_url
from planr.kafka import make_producer
from planr.parties import JIB_OWNER
from planr.signing import sign_headers
from planr.telemetry import configure_logging
from planr.topics import provision
from producers.jib import JibSubmitter
from routing.jib import JibRouting
from scenarios.jib import SECRET_GROUNDS, T0, jib_keys, proposal, tick, vote
from schemas.names import JIB_DECISION, JIB_DELIVERY, JIB_PROPOSAL, JIB_TICK, JIB_VOTE

pytestmark = pytest.mark.kafka

PANELS = Panels.load(DEFAULT_PANELS_FILE)
PANEL = list(PANELS.of("brussel"))  # the same five services sit in every TFL shipped
OUTSIDER = "nccn"
H = timedelta(hours=1)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    owners = [*PANEL, OUTSIDER, "tfl:brussel", "tfl:liege", JIB_OWNER]
    return jib_keys(tmp_path_factory.mktemp("jibkeys") / "keys", owners)


class Story:
    """The submissions, in order, and what the issue's rules say must come of them."""

    def __init__(self) -> None:
        self.steps: list[tuple[str, str, dict[str, Any]]] = []
        self.outcomes: dict[str, str] = {}
        self.statuses: dict[str, str] = {}

    def propose(self, proposer: str, arr: str, subject: str, action: str, *, at: Any,
                deadline: Any, outcome: str) -> str:
        p = proposal(proposer, arr, subject, action, at=at, deadline=deadline)
        self.steps.append((proposer, JIB_PROPOSAL, p))
        self.outcomes[p["proposal_id"]] = outcome
        return str(p["proposal_id"])

    def vote(self, pid: str, service: str, choice: str, at: Any, status: str) -> None:
        v = vote(pid, service, choice, at)
        self.steps.append((service, JIB_VOTE, v))
        self.statuses[v["vote_id"]] = status

    def tick(self, at: Any) -> None:
        self.steps.append((JIB_OWNER, JIB_TICK, tick(at)))


def story() -> tuple[Story, dict[str, str]]:
    s, t = Story(), T0
    a = s.propose("tfl:brussel", "brussel", "P-A", "insert", at=t, deadline=t + 24 * H,
                  outcome="adopted")
    for i, service in enumerate(PANEL):
        s.vote(a, service, "approve", t + i * H, "counted")
    s.vote(a, PANEL[0], "approve", t + 6 * H, "already_voted")
    s.vote(a, OUTSIDER, "approve", t + 6 * H, "not_required")
    b = s.propose("vsse", "antwerpen", "P-B", "insert", at=t, deadline=t + 24 * H,
                  outcome="rejected")
    s.vote(b, "ocam", "approve", t + H, "counted")
    s.vote(b, "sgrs", "object", t + 2 * H, "counted")
    s.vote(b, "polfed", "approve", t + 3 * H, "decided")  # later approvals change nothing
    s.vote(b, "polloc", "approve", t + 3 * H, "decided")
    c = s.propose("tfl:liege", "liege", "P-C", "insert", at=t, deadline=t + 10 * H,
                  outcome="expired")
    s.vote(c, "vsse", "approve", t + H, "counted")
    d = s.propose("tfl:brussel", "brussel", "P-D", "insert", at=t, deadline=t + 10 * H,
                  outcome="expired")
    s.vote(d, "ocam", "approve", t + 11 * H, "late")  # cast after the deadline, before a tick
    s.tick(t + 10 * H)  # reaches both deadlines: C and D expire
    s.vote(c, "polfed", "approve", t + 9 * H, "decided")  # on time, but arrives after the tick
    s.vote("00000000-0000-4000-8000-000000000000", "vsse", "approve", t + H, "unknown_proposal")
    f = s.propose("tfl:brussel", "brussel", "P-A", "remove", at=t + 12 * H,
                  deadline=t + 36 * H, outcome="adopted")
    for i, service in enumerate(reversed(PANEL)):
        s.vote(f, service, "approve", t + (13 + i) * H, "counted")
    g = s.propose("tfl:brussel", "brussel", "P-G", "insert", at=t + 12 * H,
                  deadline=t + 36 * H, outcome="adopted")
    for i, service in enumerate(PANEL):
        s.vote(g, service, "approve", t + (13 + i) * H, "counted")
    s.tick(t + 48 * H)
    return s, {"a": a, "b": b, "c": c, "d": d, "f": f, "g": g}


async def _records(conn, topic: str) -> list[Any]:
    return [rec async for rec in read_topic(conn, topic, stall_timeout=5)]


@pytest.mark.timeout(120)
async def test_consensus_adopts_rejects_expires_and_refuses_votes_with_reasons(
    conn, topics, codec, routing_setup, keys, tmp_path, capsys
):
    await provision(conn, topics, [*topics.all_jib(), topics.dead_letter])
    s, ids = story()
    forged = vote(ids["g"], "vsse", "object", T0 + 14 * H)  # vsse's vote, polfed's key
    saved = structlog.get_config()
    configure_logging("json", "debug")
    try:
        async with JibSubmitter(conn=conn, topics=topics, codec=codec) as sub:
            await sub.submit_many((keys.signers[o], n, r) for o, n, r in s.steps[:-1])
        value = codec.encode(JIB_VOTE, forged)
        producer = make_producer(conn)
        await producer.start()
        await producer.send_and_wait(topics.jib_submissions, value=value, headers=sign_headers(
            keys.signers["polfed"], topics.jib_submissions, value))
        await producer.stop()
        async with JibSubmitter(conn=conn, topics=topics, codec=codec) as sub:
            await sub.submit(keys.signers[JIB_OWNER], JIB_TICK, s.steps[-1][2])
        metrics = StoreMetrics(CollectorRegistry())
        routing = JibRouting(routing_setup.policy.document.jib, routing_setup.policy.version)
        async with Database(sqlite_url(tmp_path, "jib.db")) as db:
            async with Outbox(conn=conn, topics=topics, metrics=metrics) as outbox, \
                    JibConsensus(conn=conn, db=db, topics=topics, codec=codec, metrics=metrics,
                                 registry=keys.registry, panels=PANELS, routing=routing,
                                 outbox=outbox) as jib:
                await jib.catch_up()
            async with db.engine.connect() as c:
                decisions = (await c.execute(select(jib_decisions))).mappings().all()
                votes = (await c.execute(select(jib_votes))).mappings().all()
                members = (await c.execute(select(jib_members))).mappings().all()
                proposals = (await c.execute(select(jib_proposals))).mappings().all()
        dead = await _records(conn, topics.dead_letter)
        wanted = [topics.jib_decisions, topics.jib_audit,
                  *(topics.jib_delivery(p) for p in [*PANEL, OUTSIDER, "tfl:brussel", "tfl:liege"])]
        outputs = {t: await _records(conn, t) for t in wanted}
    finally:
        structlog.configure(**saved)

    # exactly one decision per proposal, with the outcome the rules give
    assert Counter(d["proposal_id"] for d in decisions) == Counter(set(s.outcomes))
    assert {d["proposal_id"]: d["outcome"] for d in decisions} == s.outcomes
    by_pid = {d["proposal_id"]: d for d in decisions}
    assert by_pid[ids["b"]]["objections"] == "sgrs"
    assert by_pid[ids["c"]]["decided_at"] == T0 + 10 * H  # the deadline, not the tick
    # every vote counted or refused with the reason the rules give; the forged one not taken
    assert {v["vote_id"]: v["status"] for v in votes} == s.statuses
    assert forged["vote_id"] not in {v["vote_id"] for v in votes}
    assert all(v["reason"] is None for v in votes if v["status"] != "counted")
    # P-A inserted then removed: out of the members; its history stays
    assert {(m["subject_id"], m["arrondissement"]) for m in members} == {("P-G", "brussel")}
    assert sum(1 for p in proposals if p["subject_id"] == "P-A") == 2
    # the forged vote is an unauthenticated dead letter naming the key, not the content
    assert len(dead) == 1
    dead_record = codec.decode(dead[0].value, "be.planr.DeadLetter")
    assert dead_record["reason"] == "unauthenticated"
    assert dead_record["detail"] == "wrong_signer key_id=polfed-test"
    _check_outputs(topics, codec, outputs, s, ids)
    assert SECRET_GROUNDS not in capsys.readouterr().err


def _check_outputs(topics, codec, outputs, s: Story, ids: dict[str, str]) -> None:
    decided = [codec.decode(r.value, JIB_DECISION) for r in outputs[topics.jib_decisions]]
    assert sorted(d["proposal_id"] for d in decided) == sorted(s.outcomes)
    for party in [*PANEL, OUTSIDER, "tfl:brussel", "tfl:liege"]:
        got = [codec.decode(r.value, JIB_DELIVERY) for r in outputs[topics.jib_delivery(party)]]
        kinds = Counter((d["message"], d["proposal_id"]) for d in got)
        if party in PANEL:  # every proposal and every decision, once each (the policy)
            assert kinds == Counter({(m, p): 1 for p in s.outcomes
                                     for m in ("proposal", "decision")}), party
        elif party == "tfl:brussel":  # the outcome of its own proposals, never a proposal
            assert kinds == Counter({("decision", ids[k]): 1 for k in "adfg"})
        elif party == "tfl:liege":
            assert kinds == Counter({("decision", ids["c"]): 1})
        else:
            assert kinds == Counter(), party
        for d in got:  # proposals carry their grounds to the panel; decisions never do
            assert (SECRET_GROUNDS.encode() in d["payload"]) == (d["message"] == "proposal")
    audit = [codec.decode(r.value, "be.planr.JibAudit") for r in outputs[topics.jib_audit]]
    refused = Counter(a["outcome"] for a in audit if a["action"] == "vote_refused")
    assert refused == Counter(v for v in s.statuses.values() if v != "counted")
    routed = [a for a in audit if a["action"] == "routed"]
    # one routing decision per (message, candidate): panel of 5, plus a TFL proposer
    per_proposal = Counter(a["proposal_id"] for a in routed)
    assert per_proposal[ids["b"]] == 2 * 5
    assert per_proposal[ids["a"]] == 2 * 6
    denied = {(a["party"], a["detail"]) for a in routed if a["outcome"] == "deny"}
    assert denied == {("tfl:brussel", "message=proposal"), ("tfl:liege", "message=proposal")}
    for topic in (topics.jib_audit, topics.jib_decisions):
        assert not any(SECRET_GROUNDS.encode() in r.value for r in outputs[topic])
