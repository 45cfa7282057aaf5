"""``planr policy apply`` on a 5,000-signal history, on the real broker: afterwards the holders
in the ledger are exactly what a fresh routing under the new policy entitles; newly entitled
recipients received, no-longer-entitled ones got a retraction; the NTF's facts are not sent
again; applying the same policy twice changes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from consumers.ledger import StoreLedger
from consumers.reader import read_topic
from planr.kafka import KafkaConnection
from planr.signing import ROUTER
from planr.telemetry import Metrics
from planr.topics import Topics, provision
from routing import DEFAULT_POLICY
from routing.emitter import RouterStats
from routing.engine import Facts
from routing.router import Router
from routing.setup import RoutingSetup, prepare
from scenarios.builders import publish_all
from scenarios.keys import KeyRing
from scenarios.signals import generate

pytestmark = pytest.mark.kafka
N = 5_000


def _new_policy(tmp_path: Path) -> Path:
    """Working groups lose `confidentiel`; local taskforces gain `tres_secret`."""
    text = DEFAULT_POLICY.read_text(encoding="utf-8")
    text = text.replace("    when: {classification_above: confidentiel}",
                        "    when: {classification_above: restreint}")
    start = text.index("  - id: ceiling-tfl")
    end = text.index("  - id: ceiling-wg")
    path = tmp_path / "new-policy.yaml"
    path.write_text(text[:start] + text[end:], encoding="utf-8")
    return path


def _entitled(setup: RoutingSetup, records: list[dict[str, object]]) -> set[tuple[str, str]]:
    """Offline: (event, recipient) of every allowed delivery (the NTF's counts excluded)."""
    return {(str(r["event_id"]), str(d.recipient)) for r in records
            for d in setup.engine.decide(Facts.of(r))
            if d.allowed and d.view not in setup.views.aggregate_views}


async def _run(conn: KafkaConnection, topics: Topics, setup: RoutingSetup, keys: KeyRing,
               ledger: StoreLedger, group: str, *, reapply: bool) -> RouterStats:
    async with Router(conn=conn, topics=topics, engine=setup.engine, views=setup.views,
                      codec=setup.codec, metrics=Metrics(CollectorRegistry()),
                      registry=keys.registry, signer=keys.signer(ROUTER), ledger=ledger,
                      group_id=group, reapply=reapply) as router:
        stats: RouterStats = await router.run(until_idle=2.0)
    return stats


async def _holders(ledger: StoreLedger, event_ids: list[str]) -> set[tuple[str, str]]:
    states = await ledger.load(event_ids)
    return {(e, h.recipient) for e, s in states.items() for h in s.holders()}


async def _count(conn: KafkaConnection, topic: str) -> int:
    return sum([1 async for _ in read_topic(conn, topic)])


@pytest.mark.timeout(600)
async def test_policy_apply_leaves_exactly_what_the_new_policy_entitles(
    conn, topics, keys, ledger, group_id, tmp_path, routing_setup
):
    await provision(conn, topics)
    signals = list(generate(N, seed=4242))
    await publish_all(conn, topics, routing_setup.codec, Metrics(CollectorRegistry()), signals,
                      signers=keys.signers)
    routed = await _run(conn, topics, routing_setup, keys, ledger, group_id, reapply=False)
    assert routed.signals == N
    records = [s.to_avro(agency) for agency, s in signals]
    ids = [str(r["event_id"]) for r in records]
    old = _entitled(routing_setup, records)
    assert await _holders(ledger, ids) == old
    facts_before = await _count(conn, topics.ntf_facts)

    new_setup = prepare(_new_policy(tmp_path), routing_setup.codec)
    new = _entitled(new_setup, records)
    assert new - old, "the new policy must add deliveries"
    assert old - new, "the new policy must remove deliveries"
    applied = await _run(conn, topics, new_setup, keys, ledger, f"{group_id}-apply",
                         reapply=True)
    assert await _holders(ledger, ids) == new
    assert sum(applied.deliveries.values()) == len(new - old)
    assert applied.retractions == {"not_entitled": len(old - new)}
    assert await _count(conn, topics.ntf_facts) == facts_before  # NTF totals unchanged

    again = await _run(conn, topics, new_setup, keys, ledger, f"{group_id}-again",
                       reapply=True)
    assert (sum(again.deliveries.values()), sum(again.retractions.values())) == (0, 0)
    assert again.unchanged["unchanged"] == N
    assert await _holders(ledger, ids) == new
