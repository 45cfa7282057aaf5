"""OCAM's worklist: pending fiches, forwarded requests, answers delivered to the requester only.

The expected queues are written down from the histories fed below (which fiche is proposed,
who fed it, when each contribution was published), not computed with the code under test;
on the wire, every OCAM answers topic is read directly as the oracle.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import TopicPartition
from alembic import command
from alembic.config import Config
from prometheus_client import CollectorRegistry
from sqlalchemy import select

from consumers.ftf import consult
from consumers.ftf import worklist as wl
from consumers.ftf.governance import AccessConfig, AccessMode
from consumers.ftf.projector import Projector
from consumers.ftf.queries import consultation_log
from consumers.metrics import StoreMetrics
from consumers.outbox import topic_of
from consumers.store import Database
from consumers.store.db import MIGRATIONS_DIR
from consumers.store.tables import consultations, ocam_requests, outbox
from planr.domain import Agency, Recipient, RecipientClass
from planr.errors import UsageError
from planr.kafka import KafkaConnection
from planr.signing import ROUTER
from planr.topics import Topics
from scenarios.builders import numbered_signal as signal
from scenarios.ftf import ftf_delivery
from scenarios.keys import KeyRing
from tests.test_store_helpers import BACKENDS, records, store_url

ACCESS = {
    Agency.OCAM: AccessMode.CONSULT_AND_FEED,
    Agency.VSSE: AccessMode.CONSULT_AND_FEED,
    Agency.POLFED: AccessMode.CONSULT_AND_FEED,
    Agency.NCCN: AccessMode.HIT_NO_HIT,
    Agency.DGSP: AccessMode.INDIRECT,
    Agency.COMREG: AccessMode.INDIRECT,
    Agency.MP: AccessMode.NONE,
}
NOT_OCAM = [Agency.VSSE, Agency.NCCN, Agency.DGSP, Agency.MP]
T0 = datetime(2026, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 6, 1, tzinfo=UTC)
H = timedelta(hours=1)
M = timedelta(minutes=1)
OLD = T0 - timedelta(days=10)


def history(setup) -> list[bytes]:
    """P-A, P-B, P-C proposed; P-I included and P-R removed by OCAM; dgsp may not feed."""
    def d(n: int, subject: str, agency: Agency, occurred: datetime, published: datetime,
          **kw: Any) -> bytes:
        s = signal(n, subject=subject, agency=agency, at=occurred, **kw)
        return ftf_delivery(setup, s, published_at=published)

    return [
        d(0, "P-A", Agency.VSSE, T0 + H, T0 + H + M, statuses=("FTF",)),
        d(1, "P-B", Agency.POLFED, T0 + 2 * H, T0 + 2 * H + M, statuses=("HTF",)),
        d(2, "P-A", Agency.POLFED, T0 + 3 * H, T0 + 3 * H + M, statuses=("CTE",)),
        # old information, published late: P-C waits since its publication
        d(3, "P-C", Agency.VSSE, OLD, T0 + 4 * H),
        d(4, "P-A", Agency.VSSE, T0 + 5 * H, T0 + 5 * H + M),
        d(5, "P-I", Agency.VSSE, T0, T0 + M),
        d(6, "P-I", Agency.OCAM, T0 + H, T0 + H + M, ocam={"action": "include"}),
        d(7, "P-R", Agency.OCAM, T0, T0 + M, ocam={"action": "include"}),
        d(8, "P-R", Agency.OCAM, T0 + H, T0 + H + M, ocam={"action": "remove"}),
        d(9, "P-D", Agency.DGSP, T0, T0 + M),
    ]


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def fed(agency: str, n: int, first: datetime, last: datetime) -> dict[str, Any]:
    return {"agency": agency, "contributions": n, "first_at": iso(first), "last_at": iso(last)}


def entry(subject: str, statuses: list[str], waiting: datetime, first: datetime,
          last: datetime, n: int, *feeders: dict[str, Any]) -> dict[str, Any]:
    return {"subject_id": subject, "kind": "person", "state": "proposed", "statuses": statuses,
            "waiting_since": iso(waiting), "first_info_at": iso(first),
            "last_info_at": iso(last), "contributions": n, "fed_by": list(feeders)}


EXPECTED_PENDING = [
    entry("P-A", ["CTE", "FTF"], T0 + H + M, T0 + H, T0 + 5 * H, 3,
          fed("vsse", 2, T0 + H + M, T0 + 5 * H + M), fed("polfed", 1, T0 + 3 * H + M,
                                                          T0 + 3 * H + M)),
    entry("P-B", ["HTF"], T0 + 2 * H + M, T0 + 2 * H, T0 + 2 * H, 1,
          fed("polfed", 1, T0 + 2 * H + M, T0 + 2 * H + M)),
    entry("P-C", ["FTF"], T0 + 4 * H, OLD, OLD, 1, fed("vsse", 1, T0 + 4 * H, T0 + 4 * H)),
]


async def populate(db: Database, setup, keys: KeyRing) -> None:
    topic = Topics("unit").delivery(Recipient(RecipientClass.FTF_DB))
    projector = Projector(conn=KafkaConnection("127.0.0.1:1"), db=db, topics=Topics("unit"),
                          codec=setup.codec, access=AccessConfig(ACCESS),
                          metrics=StoreMetrics(CollectorRegistry()), registry=keys.registry)
    await projector.process({TopicPartition(topic, 0): records(topic, history(setup), 0,
                                                               keys.signer(ROUTER))})


def parts(db: Database, codec) -> tuple[wl.Worklist, consult.Consultations]:
    kw: dict[str, Any] = {"db": db, "access": AccessConfig(ACCESS), "codec": codec,
                          "metrics": StoreMetrics(CollectorRegistry())}
    return wl.Worklist(**kw), consult.Consultations(**kw)


@pytest.fixture(params=BACKENDS)
async def empty_db(request, tmp_path):
    async with store_url(request.param, tmp_path) as url, Database(url) as database:
        yield database


@pytest.fixture
async def db(empty_db, routing_setup, keys):
    await populate(empty_db, routing_setup, keys)
    return empty_db


async def rows_of(db: Database, table) -> list[dict[str, Any]]:
    async with db.engine.connect() as conn:
        return [dict(r) for r in (await conn.execute(select(table))).mappings()]


async def test_pending_lists_proposed_fiches_longest_waiting_first_with_their_feeders(db, codec):
    worklist, _ = parts(db, codec)
    pending = await worklist.pending(Agency.OCAM, NOW)
    assert [p.public() for p in pending] == EXPECTED_PENDING
    assert "never stored" not in json.dumps([p.public() for p in pending])  # no summary
    assert pending[0].line().startswith("P-A ")
    assert "fed by vsse(2) polfed(1)" in pending[0].line()
    (logged,) = await consultation_log(db)
    assert (logged["service"], logged["verb"], logged["answer_class"]) == (
        "ocam", "pending", "fiches")


async def refusals(worklist: wl.Worklist, request_id: str) -> list[str]:
    out = []
    for service in NOT_OCAM:
        for call in (worklist.pending(service, NOW), worklist.requests(service, NOW),
                     worklist.answer(service, request_id, wl.Reply.HIT, NOW)):
            with pytest.raises(wl.NotManagerError) as info:
                await call
            out.append(str(info.value))
    return out


async def test_other_services_are_refused_alike_whatever_the_store_holds_and_logged(
    empty_db, codec, routing_setup, keys
):
    worklist, cons = parts(empty_db, codec)
    before = await refusals(worklist, str(uuid.uuid4()))
    await populate(empty_db, routing_setup, keys)
    await cons.show(Agency.DGSP, "P-A", "case 7", NOW)
    (request,) = await worklist.requests(Agency.OCAM, NOW)
    after = await refusals(worklist, request.request_id)
    assert before == after
    assert before[0] == "ftf pending is OCAM's worklist: vsse may not use it"
    log = await consultation_log(empty_db)
    refused = [r for r in log if r["answer_class"] == "no_access"]
    assert len(refused) == 2 * 3 * len(NOT_OCAM)
    assert {r["verb"] for r in refused} == {"pending", "requests", "answer"}
    assert {r["service"] for r in refused} == {a.value for a in NOT_OCAM}
    kinds = sorted(r["kind"] for r in await rows_of(empty_db, outbox))
    # P-R's removal, the audit of every attempt, dgsp's request, and no answer
    assert kinds == ["consultation"] * len(log) + ["ocam_request", "removal"]
    assert [r["status"] for r in await rows_of(empty_db, ocam_requests)] == ["open"]


async def test_forwarded_consultations_join_ocams_queue_oldest_first(db, codec):
    worklist, cons = parts(db, codec)
    await cons.show(Agency.VSSE, "P-A", "not forwarded", NOW)
    await cons.list(Agency.COMREG, "case 9", NOW + H, status="FTF")
    shown = await cons.show(Agency.DGSP, "P-B", "case 7", NOW)
    listed = await worklist.requests(Agency.OCAM, NOW + 2 * H)
    assert [r.public() for r in listed] == [
        {"request_id": shown.consultation_id, "requested_at": iso(NOW), "service": "dgsp",
         "verb": "show", "subject_id": "P-B", "query": "", "purpose": "case 7"},
        {"request_id": listed[1].request_id, "requested_at": iso(NOW + H), "service": "comreg",
         "verb": "list", "subject_id": None, "query": "status=FTF", "purpose": "case 9"},
    ]
    log = {r["consultation_id"]: r for r in await consultation_log(db)}
    assert log[listed[1].request_id]["answer_class"] == "forwarded"


async def test_a_request_is_queued_only_with_its_logged_consultation(db, codec, monkeypatch):
    _, cons = parts(db, codec)

    async def crash(*_args: Any) -> None:
        raise RuntimeError("crash before the consultation is logged")

    monkeypatch.setattr(consult, "record_consultation", crash)
    with pytest.raises(RuntimeError):
        await cons.show(Agency.DGSP, "P-A", "p", NOW)
    assert await rows_of(db, ocam_requests) == []


async def test_ocam_answers_a_request_once_for_the_requesting_service_only(db, codec):
    worklist, cons = parts(db, codec)
    asked = await cons.show(Agency.DGSP, "P-A", "case 7", NOW)
    await cons.show(Agency.COMREG, "P-B", "case 8", NOW)
    rid = asked.consultation_id
    message = await worklist.answer(Agency.OCAM, rid.upper(), wl.Reply.HIT, NOW + H)
    assert message["request_id"] == rid
    assert (message["service"], message["answer"], message["subject_id"]) == ("dgsp", "hit", "P-A")
    row = next(r for r in await rows_of(db, ocam_requests) if r["request_id"] == rid)
    assert (row["status"], row["answer"], row["answered_by"], row["answered_at"]) == (
        "answered", "hit", "ocam", NOW + H)
    (sent,) = [r for r in await rows_of(db, outbox) if r["kind"] == "ocam_answer"]
    assert sent["message_id"] == row["answer_id"] == message["answer_id"]
    assert topic_of(Topics("x"), sent["kind"], sent["message_key"]) == "x.ftf.ocam-answers.dgsp"
    decoded = codec.decode(sent["value"], "be.planr.OcamAnswer")
    assert (decoded["request_id"], decoded["answer"], decoded["requested_at"]) == (rid, "hit", NOW)
    assert [r.service for r in await worklist.requests(Agency.OCAM, NOW)] == ["comreg"]

    with pytest.raises(wl.AlreadyAnsweredError, match=f"request {rid} was already answered"):
        await worklist.answer(Agency.OCAM, rid, wl.Reply.NO_HIT, NOW + 2 * H)
    with pytest.raises(wl.UnknownRequestError, match="no request"):
        await worklist.answer(Agency.OCAM, str(uuid.uuid4()), wl.Reply.HIT, NOW)
    with pytest.raises(UsageError, match="REQUEST must be a request id"):
        await worklist.answer(Agency.OCAM, "P-A", wl.Reply.HIT, NOW)
    assert len([r for r in await rows_of(db, outbox) if r["kind"] == "ocam_answer"]) == 1
    classes = [r["answer_class"] for r in await consultation_log(db) if r["verb"] == "answer"]
    assert sorted(classes) == ["already_answered", "answered", "unknown_request"]


def _upgrade_to(revision: str):
    def go(sync_conn) -> None:
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        cfg.attributes["connection"] = sync_conn
        command.upgrade(cfg, revision)
    return go


@pytest.mark.parametrize("kind", BACKENDS)
async def test_the_migration_queues_consultations_forwarded_before_it(kind, tmp_path, codec):
    async with store_url(kind, tmp_path) as url:
        async with Database(url, migrate=False) as old, old.engine.begin() as conn:
            await conn.run_sync(_upgrade_to("0002"))
            base = {"service": "dgsp", "access_mode": "indirect", "verb": "show",
                    "query": "", "purpose": "before"}
            await conn.execute(consultations.insert(), [
                {**base, "consultation_id": "c-1", "consulted_at": T0, "subject_id": "P-1",
                 "answer_class": "forwarded"},
                {**base, "consultation_id": "c-2", "consulted_at": T0, "subject_id": "P-2",
                 "service": "vsse", "access_mode": "consult", "answer_class": "no_hit"},
            ])
        async with Database(url) as db:
            worklist, _ = parts(db, codec)
            (queued,) = await worklist.requests(Agency.OCAM, NOW)
            assert (queued.request_id, queued.subject_id, queued.requested_at,
                    queued.purpose) == ("c-1", "P-1", T0, "before")
