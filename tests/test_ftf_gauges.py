"""The common database's domain gauges and consultation times: after a small history (three
fiches proposed, one included, one removed, one refused feed), two forwarded consultations and
one OCAM answer, the projector's tick sets the gauges to the counts the test's own SQL finds
(and that the history implies); each consultation observes one time sample labelled by verb
and answer class only."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry
from sqlalchemy import text

from consumers.ftf import consult
from consumers.ftf import worklist as wl
from consumers.ftf.governance import AccessConfig
from consumers.ftf.projector import Projector
from consumers.metrics import StoreMetrics
from consumers.store import Database
from planr.domain import Agency, Recipient, RecipientClass
from planr.kafka import KafkaConnection
from planr.signing import ROUTER
from planr.topics import Topics
from tests.test_ocam_worklist import ACCESS, NOW, history
from tests.test_store_helpers import BACKENDS, records, store_url

#: What ``history`` implies: P-A, P-B, P-C proposed, P-I included, P-R removed (P-D refused).
FROM_HISTORY = {"proposed": 3, "included": 1, "removed": 1}


@pytest.fixture(params=BACKENDS)
async def db(request, tmp_path):
    async with store_url(request.param, tmp_path) as url, Database(url) as database:
        yield database


async def fed(db: Database, setup, keys, registry: CollectorRegistry) -> Projector:
    topic = Topics("unit").delivery(Recipient(RecipientClass.FTF_DB))
    projector = Projector(conn=KafkaConnection("127.0.0.1:1"), db=db, topics=Topics("unit"),
                          codec=setup.codec, access=AccessConfig(ACCESS),
                          metrics=StoreMetrics(registry), registry=keys.registry,
                          gauge_interval=0.0)
    await projector.process({TopicPartition(topic, 0): records(topic, history(setup), 0,
                                                               keys.signer(ROUTER))})
    return projector


async def sql(db: Database, query: str) -> list[Any]:
    async with db.engine.connect() as conn:
        return list((await conn.execute(text(query))).all())


def samples(registry: CollectorRegistry, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted(s.labels.items())): s.value
            for family in registry.collect() for s in family.samples if s.name == name}


async def test_the_tick_sets_fiche_and_ocam_gauges_to_the_stores_counts(
    db, routing_setup, keys
):
    registry = CollectorRegistry()
    projector = await fed(db, routing_setup, keys, registry)
    metrics = projector._metrics
    kw: dict[str, Any] = {"db": db, "access": AccessConfig(ACCESS), "codec": routing_setup.codec,
                          "metrics": metrics}
    cons, worklist = consult.Consultations(**kw), wl.Worklist(**kw)
    asked = await cons.show(Agency.DGSP, "P-A", "case 7", NOW)
    await cons.list(Agency.COMREG, "case 8", NOW, status="FTF")
    await worklist.answer(Agency.OCAM, asked.consultation_id, wl.Reply.HIT, NOW)
    await projector.after_commit()  # the tick

    by_state = dict(await sql(db, "SELECT state, COUNT(*) FROM fiches GROUP BY state"))
    assert by_state == FROM_HISTORY
    for state, n in by_state.items():
        assert registry.get_sample_value("planr_ftf_fiches", {"state": state}) == n
    (open_requests,), = await sql(db, "SELECT COUNT(*) FROM ocam_requests "
                                      "WHERE status = 'open'")
    assert open_requests == 1  # comreg's; dgsp's was answered
    assert samples(registry, "planr_ftf_ocam_pending") == {
        (("kind", "fiche"),): FROM_HISTORY["proposed"], (("kind", "request"),): open_requests}


async def test_a_state_that_empties_goes_back_to_zero(db, routing_setup, keys):
    registry = CollectorRegistry()
    projector = await fed(db, routing_setup, keys, registry)
    async with db.engine.begin() as conn:
        await conn.execute(text("UPDATE fiches SET state = 'included' WHERE state = 'proposed'"))
    await projector.after_commit()
    assert samples(registry, "planr_ftf_fiches") == {
        (("state", "proposed"),): 0, (("state", "included"),): 4, (("state", "removed"),): 1}
    assert registry.get_sample_value("planr_ftf_ocam_pending", {"kind": "fiche"}) == 0


async def test_each_consultation_observes_one_time_sample_by_verb_and_answer_class(
    db, routing_setup, keys
):
    registry = CollectorRegistry()
    metrics = StoreMetrics(registry)
    kw: dict[str, Any] = {"db": db, "access": AccessConfig(ACCESS), "codec": routing_setup.codec,
                          "metrics": metrics}
    await fed(db, routing_setup, keys, CollectorRegistry())
    cons, worklist = consult.Consultations(**kw), wl.Worklist(**kw)
    await cons.show(Agency.VSSE, "P-I", "case 1", NOW)  # included: the fiche
    await cons.show(Agency.NCCN, "P-A", "case 2", NOW)  # proposed only: no hit
    await cons.list(Agency.MP, "case 3", NOW)  # no access
    await worklist.pending(Agency.OCAM, NOW)
    counts = samples(registry, "planr_ftf_consultation_seconds_count")
    assert counts == {
        (("answer_class", "fiche"), ("verb", "show")): 1,
        (("answer_class", "no_hit"), ("verb", "show")): 1,
        (("answer_class", "no_access"), ("verb", "list")): 1,
        (("answer_class", "fiches"), ("verb", "pending")): 1,
    }
    sums = samples(registry, "planr_ftf_consultation_seconds_sum")
    assert all(0 < v < 10 for v in sums.values())
    # the labels are verbs and answer classes: no subject, service or purpose
    values = {v for key in counts for _, v in key}
    assert not values & {"P-I", "P-A", "vsse", "nccn", "mp", "ocam", "case 1"}
