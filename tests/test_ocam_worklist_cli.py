"""OCAM's worklist from the command line: listing and answering end to end, and without a broker."""
from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest
import structlog
from typer.testing import CliRunner

from cli import app
from consumers.reader import read_topic
from consumers.store import Database
from planr.kafka import KafkaConnection
from planr.signing import PROJECTOR
from planr.topics import Topics, provision
from scenarios.keys import KeyRing
from tests.conftest import key_env
from tests.test_ocam_worklist import ACCESS, EXPECTED_PENDING, populate


@pytest.fixture
def keep_logging():
    """The CLI configures structlog to print to the runner's stream: restore it afterwards."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


async def read_all(conn: KafkaConnection, topic: str, codec, name: str) -> list[dict[str, Any]]:
    return [codec.decode(r.value, name) async for r in read_topic(conn, topic)]


def cli_env(conn: KafkaConnection, topics: Topics, tmp_path: Path, setup, keys: KeyRing
            ) -> dict[str, str | None]:
    """The settings of a CLI on a common database where :func:`history` is projected."""
    access = tmp_path / "access.yaml"
    access.write_text("services:\n" + "".join(f"  {a.value}: {m.value}\n"
                                              for a, m in ACCESS.items()))
    data = tmp_path / "data"
    url = f"sqlite+aiosqlite:///{data / 'ftf.db'}"

    async def seed() -> None:
        async with Database(url) as db:
            await populate(db, setup, keys)

    asyncio.run(seed())
    return {**{k: None for k in os.environ if k.startswith("PLANR_")},
            "PLANR_BOOTSTRAP_SERVERS": conn.bootstrap_servers,
            "PLANR_TOPIC_PREFIX": topics.prefix, "PLANR_DATA_DIR": str(data),
            "PLANR_FTF_DB_URL": url, "PLANR_FTF_ACCESS": str(access),
            "PLANR_LOG_LEVEL": "warning", **key_env(keys, PROJECTOR)}


@pytest.mark.kafka
@pytest.mark.usefixtures("keep_logging")
def test_ocam_lists_and_answers_a_forwarded_request_end_to_end(
    conn, topics, routing_setup, tmp_path, keys
):
    codec = routing_setup.codec
    every = topics.all_ftf_ocam_answers()
    created = asyncio.run(provision(conn, topics, [topics.ftf_consultations,
                                                   topics.ftf_ocam_requests, *every]))
    assert set(every) <= set(created)  # so that an empty answers topic is a real oracle
    env = cli_env(conn, topics, tmp_path, routing_setup, keys)
    runner = CliRunner()

    def run(*args: str) -> Any:
        return runner.invoke(app, ["ftf", *args], env=env, catch_exceptions=False)

    def refusals(request_id: str) -> list[tuple[int, str, str]]:
        runs = [run("pending", "--as", "vsse"), run("requests", "--as", "dgsp", "--json"),
                run("answer", request_id, "--as", "dgsp", "--answer", "hit")]
        return [(r.exit_code, r.stdout, r.stderr) for r in runs]

    refused_before = refusals("no-such-request")
    shown = run("show", "P-A", "--as", "dgsp", "--purpose", "case 7")
    assert (shown.exit_code, shown.stdout) == (0, "request forwarded to OCAM\n")
    run("list", "--as", "comreg", "--status", "FTF")
    listed = run("requests", "--as", "ocam", "--json")
    assert listed.exit_code == 0
    queue = [json.loads(x) for x in listed.stdout.splitlines()]
    assert [(q["service"], q["subject_id"], q["purpose"]) for q in queue] == [
        ("dgsp", "P-A", "case 7"), ("comreg", None, "")]
    rid = queue[0]["request_id"]
    forwarded = asyncio.run(read_all(conn, topics.ftf_ocam_requests, codec,
                                     "be.planr.OcamRequest"))
    assert [f["request_id"] for f in forwarded] == [q["request_id"] for q in queue]
    # refused alike before and after requests exist, for an unknown and for a real request
    assert refusals(rid) == refused_before
    assert refused_before[0] == (1, "", "error: ftf pending is OCAM's worklist: vsse may not "
                                        "use it\n")

    answered = run("answer", rid, "--as", "ocam", "--answer", "hit")
    assert answered.exit_code == 0, answered.stderr
    assert answered.stdout == f"answered {rid}: hit (to dgsp)\n"

    async def wire() -> list[list[dict[str, Any]]]:
        return await asyncio.gather(*(read_all(conn, t, codec, "be.planr.OcamAnswer")
                                      for t in every))

    on_wire = dict(zip(every, asyncio.run(wire()), strict=True))
    (delivered,) = on_wire.pop(f"{topics.prefix}.ftf.ocam-answers.dgsp")
    assert (delivered["request_id"], delivered["service"], delivered["subject_id"],
            delivered["answer"], delivered["answered_by"]) == (rid, "dgsp", "P-A", "hit", "ocam")
    assert len(on_wire) == 12
    assert all(messages == [] for messages in on_wire.values())

    mine = run("answers", "--as", "dgsp", "--json")
    assert [json.loads(x)["request_id"] for x in mine.stdout.splitlines()] == [rid]
    theirs = run("answers", "--as", "comreg", "--json")
    assert (theirs.exit_code, theirs.stdout) == (0, "")
    ocam = run("answers", "--as", "ocam")
    assert (ocam.exit_code, ocam.stdout) == (1, "")
    assert "ocam answers the requests: it has no answers topic" in ocam.stderr
    again = run("answer", rid, "--as", "ocam", "--answer", "no_hit")
    assert again.exit_code == 1
    assert f"request {rid} was already answered" in again.stderr
    left = run("requests", "--as", "ocam", "--json")
    assert [json.loads(x)["service"] for x in left.stdout.splitlines()] == ["comreg"]
    assert len(asyncio.run(read_all(conn, topics.ftf_ocam_answers("dgsp"), codec,
                                    "be.planr.OcamAnswer"))) == 1


@pytest.mark.usefixtures("keep_logging")
def test_cli_pending_and_requests_without_a_broker(routing_setup, tmp_path, keys):
    env = cli_env(KafkaConnection("127.0.0.1:1"), Topics("unit"), tmp_path, routing_setup,
                  keys)
    env["PLANR_BOOTSTRAP_SERVERS"] = None
    runner = CliRunner()

    def run(*args: str) -> Any:
        return runner.invoke(app, ["ftf", *args], env=env, catch_exceptions=False)

    pending = run("pending", "--as", "ocam", "--json")
    assert pending.exit_code == 0
    assert [json.loads(x) for x in pending.stdout.splitlines()] == EXPECTED_PENDING
    text = run("pending", "--as", "ocam").stdout.splitlines()
    assert [line.split()[0] for line in text] == ["P-A", "P-B", "P-C"]
    assert run("show", "P-A", "--as", "dgsp", "--purpose", "case 7").exit_code == 0
    (line,) = run("requests", "--as", "ocam").stdout.splitlines()
    assert " dgsp " in line
    assert line.endswith("show  P-A  purpose='case 7'")
    bad = run("answer", "not-an-id", "--as", "ocam", "--answer", "hit")
    assert (bad.exit_code, bad.stdout) == (1, "")
    assert "REQUEST must be a request id" in bad.stderr
    assert run("answer", "x", "--as", "ocam", "--answer", "maybe").exit_code == 2
