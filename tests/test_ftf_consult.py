"""Consultation of the common database under each access mode, and the no-oracle rule."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import pytest
import structlog
from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry
from sqlalchemy import select
from typer.testing import CliRunner

from cli import app
from consumers.ftf.consult import Consultations
from consumers.ftf.governance import AccessConfig, AccessMode
from consumers.ftf.projector import Projector
from consumers.ftf.queries import consultation_log
from consumers.metrics import StoreMetrics
from consumers.store import Database
from consumers.store.tables import outbox
from planr.domain import Agency, Recipient, RecipientClass
from planr.kafka import KafkaConnection
from planr.signing import ROUTER
from planr.topics import Topics
from scenarios.builders import numbered_signal as signal
from scenarios.ftf import ftf_delivery
from scenarios.keys import KeyRing
from tests.test_store_helpers import BACKENDS, records, store_url

ACCESS = {
    Agency.OCAM: AccessMode.CONSULT_AND_FEED,
    Agency.VSSE: AccessMode.CONSULT,
    Agency.NCCN: AccessMode.HIT_NO_HIT,
    Agency.DGSP: AccessMode.INDIRECT,
    Agency.MP: AccessMode.NONE,
}
NOW = datetime(2026, 6, 1, tzinfo=UTC)
TOPIC = Topics("unit").delivery(Recipient(RecipientClass.FTF_DB))


async def populate(db: Database, codec, setup, keys: KeyRing) -> None:
    """P-1 included by OCAM; P-2 only proposed by a feeding service (not visible)."""
    projector = Projector(conn=KafkaConnection("127.0.0.1:1"), db=db, topics=Topics("unit"),
                          codec=codec, access=AccessConfig(ACCESS),
                          metrics=StoreMetrics(CollectorRegistry()), registry=keys.registry)
    values = [ftf_delivery(setup, s) for s in (
        signal(0, agency=Agency.OCAM, statuses=("FTF", "CTE"),
               ocam={"action": "include", "threat_level": 3}),
        signal(1, subject="P-2", agency=Agency.OCAM),
    )]
    await projector.process({TopicPartition(TOPIC, 0): records(TOPIC, values, 0,
                                                               keys.signer(ROUTER))})


@pytest.fixture(params=BACKENDS)
async def db(request, tmp_path, codec, routing_setup, keys):
    async with store_url(request.param, tmp_path) as url, Database(url) as database:
        await populate(database, codec, routing_setup, keys)
        yield database


async def test_each_access_mode_answers_its_class(db, codec):
    c = Consultations(db=db, access=AccessConfig(ACCESS), codec=codec,
                      metrics=StoreMetrics(CollectorRegistry()))
    fiche = await c.show(Agency.VSSE, "P-1", "case 12", NOW)
    assert fiche.answer_class == "fiche"
    assert fiche.fiches[0].threat_level == 3
    text, code = fiche.render()
    assert code == 0
    assert "threat_level: 3" in text
    assert "statuses: CTE,FTF" in text
    assert (await c.show(Agency.VSSE, "P-2", "p", NOW)).answer_class == "no_hit"  # proposed
    assert (await c.show(Agency.NCCN, "P-1", "p", NOW)).render() == ("hit\n", 0)
    assert (await c.show(Agency.NCCN, "P-9", "p", NOW)).render() == ("no hit\n", 1)
    forwarded = await c.show(Agency.DGSP, "P-1", "p", NOW)
    assert forwarded.render() == ("request forwarded to OCAM\n", 0)
    listed = await c.list(Agency.VSSE, "p", NOW, status="CTE", arrondissement="brussel")
    assert [f.subject_id for f in listed.fiches] == ["P-1"]
    assert (await c.list(Agency.VSSE, "p", NOW, status="PH")).render() == ("", 0)
    assert (await c.list(Agency.NCCN, "p", NOW, status="FTF")).render() == ("hit\n", 0)

    log = await consultation_log(db)
    assert sorted((r["service"], r["verb"], r["answer_class"]) for r in log) == sorted([
        ("vsse", "show", "fiche"), ("vsse", "show", "no_hit"), ("nccn", "show", "hit"),
        ("nccn", "show", "no_hit"), ("dgsp", "show", "forwarded"), ("vsse", "list", "fiches"),
        ("vsse", "list", "fiches"), ("nccn", "list", "hit")])
    assert "case 12" in {r["purpose"] for r in log}
    async with db.engine.connect() as conn:
        kinds = [r.kind for r in await conn.execute(select(outbox.c.kind))]
    assert sorted(kinds) == ["consultation"] * 8 + ["ocam_request"]


async def test_no_access_answers_as_an_unknown_subject(db, codec):
    c = Consultations(db=db, access=AccessConfig(ACCESS), codec=codec,
                      metrics=StoreMetrics(CollectorRegistry()))
    for as_json in (False, True):
        denied = await c.show(Agency.MP, "P-1", "p", NOW)
        unknown = await c.show(Agency.VSSE, "P-1-unknown", "p", NOW)
        unknown_same_id = await c.show(Agency.NCCN, "P-1", "p", NOW)
        assert denied.answer_class == "no_access"
        other = (await c.show(Agency.MP, "P-404", "p", NOW)).render(as_json=as_json)
        assert denied.render(as_json=as_json) == (other[0].replace("P-404", "P-1"), other[1])
        text, code = denied.render(as_json=as_json)
        assert code == 1
        assert text.replace("P-1", "X") == unknown.render(as_json=as_json)[0].replace(
            "P-1-unknown", "X")
        assert unknown_same_id.answer_class == "hit"
        assert (await c.list(Agency.MP, "p", NOW)).render(as_json=as_json) == ("", 0)
    # the oversight bodies still see what happened
    assert "no_access" in {r["answer_class"] for r in await consultation_log(db)}


@pytest.fixture
def keep_logging():
    """The CLI configures structlog to print to the runner's stream: restore it afterwards."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.mark.usefixtures("keep_logging")
def test_cli_consultation_no_oracle_and_audit(tmp_path, codec, routing_setup, keys):
    url = f"sqlite+aiosqlite:///{tmp_path / 'ftf.db'}"

    async def setup() -> None:
        async with Database(url) as db:
            await populate(db, codec, routing_setup, keys)

    asyncio.run(setup())
    access = tmp_path / "access.yaml"
    access.write_text("services:\n" + "".join(f"  {a.value}: {m.value}\n"
                                              for a, m in ACCESS.items()))
    env = {"PLANR_FTF_DB_URL": url, "PLANR_FTF_ACCESS": str(access),
           "PLANR_BOOTSTRAP_SERVERS": None}
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(app, list(args), env=env, catch_exceptions=False)

    for extra in ([], ["--json"]):
        known_denied = run("ftf", "show", "P-1", "--as", "mp", "--purpose", "x", *extra)
        unknown_denied = run("ftf", "show", "P-1", "--as", "vsse", "--purpose", "x", *extra)
        assert unknown_denied.exit_code == 0  # vsse may consult: P-1 is there
        unknown = run("ftf", "show", "P-1", "--as", "nccn", "--purpose", "x", *extra)
        assert unknown.exit_code == 0
        missing = run("ftf", "show", "P-777", "--as", "vsse", "--purpose", "x", *extra)
        missing_denied = run("ftf", "show", "P-777", "--as", "mp", "--purpose", "x", *extra)
        assert missing.exit_code == known_denied.exit_code == missing_denied.exit_code == 1
        assert known_denied.stdout.replace("P-1", "ID") == missing.stdout.replace("P-777", "ID")
        assert known_denied.stdout.replace("P-1", "ID") == missing_denied.stdout.replace(
            "P-777", "ID")
    listed = run("ftf", "list", "--as", "vsse", "--json")
    assert [json.loads(x)["subject_id"] for x in listed.stdout.splitlines()] == ["P-1"]
    assert run("ftf", "list", "--as", "mp").stdout == run(
        "ftf", "list", "--as", "vsse", "--status", "PH").stdout == ""
    audit = run("ftf", "audit", "--json")
    lines = [json.loads(x) for x in audit.stdout.splitlines()]
    assert len(lines) == 13
    assert {x["service"] for x in lines} == {"mp", "vsse", "nccn"}
    assert run("ftf", "overdue").exit_code == 0
