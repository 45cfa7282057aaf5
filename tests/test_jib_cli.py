"""``planr jib`` as a user runs it, on the real broker: propose, vote, the consensus process,
show, list and members; no oracle for parties outside a proposal; every consultation logged;
usage errors name the option or field, never the content."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from sqlalchemy import create_engine, select
from typer.testing import CliRunner, Result

from cli import app
from consumers.jib.panels import DEFAULT_PANELS_FILE, Panels
from consumers.jib.tables import jib_consultations
from consumers.store import sqlite_url
from planr.parties import JIB_OWNER
from planr.signing import KeyRegistry
from planr.topics import provision
from scenarios.jib import SECRET_GROUNDS, jib_keys
from tests.conftest import SESSION_TIMEOUT_MS

pytestmark = pytest.mark.kafka

PANEL = list(Panels.load(DEFAULT_PANELS_FILE).of("brussel"))
OUTSIDER = "nccn"
PLANR = str(Path(sys.executable).parent / "planr")


class Jib:
    """Runs ``planr`` with one broker, topic prefix, JIB store and key registry."""

    def __init__(self, conn, topics, tmp_path) -> None:
        self.keys = jib_keys(tmp_path / "keys", [*PANEL, OUTSIDER, "tfl:brussel", JIB_OWNER])
        self.db_url = sqlite_url(tmp_path / "data", "jib.db")
        self.env = {k: None for k in os.environ if k.startswith("PLANR_")} | {
            "PLANR_BOOTSTRAP_SERVERS": conn.bootstrap_servers,
            "PLANR_TOPIC_PREFIX": topics.prefix, "PLANR_JIB_DB_URL": self.db_url,
            "PLANR_KEY_REGISTRY": str(self.keys.registry_path),
            "PLANR_DATA_DIR": str(tmp_path / "data"),
            "PLANR_SESSION_TIMEOUT_MS": str(SESSION_TIMEOUT_MS)}

    def run(self, *args: str, key: str | None = None) -> Result:
        env = dict(self.env)
        if key is not None:
            env["PLANR_SIGNING_KEY"] = str(self.keys.paths[key])
        return CliRunner().invoke(app, list(args), env=env)

    def consultations(self) -> list[dict[str, object]]:
        engine = create_engine(self.db_url.replace("+aiosqlite", ""))
        try:
            with engine.connect() as c:
                rows = c.execute(select(jib_consultations).order_by(
                    jib_consultations.c.consulted_at)).mappings().all()
        finally:
            engine.dispose()
        return [dict(r) for r in rows]


@pytest.fixture(autouse=True)
def _keep_logging() -> Iterator[None]:
    """The CLI configures structlog for its process; give the next tests theirs back."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.fixture
def jib(conn, topics, tmp_path) -> Jib:
    asyncio.run(provision(conn, topics, [*topics.all_jib(), topics.dead_letter]))
    return Jib(conn, topics, tmp_path)


def _propose(jib: Jib, tmp_path, subject: str, action: str = "insert") -> str:
    grounds = tmp_path / f"grounds-{subject}.txt"
    grounds.write_text(f"{SECRET_GROUNDS}: why {subject}\n", "utf-8")
    r = jib.run("jib", "propose", "--as", "tfl:brussel", "--subject", subject, "--action",
                action, "--grounds", str(grounds), key="tfl:brussel")
    assert r.exit_code == 0, r.stderr
    assert SECRET_GROUNDS not in r.stdout + r.stderr
    pid = r.stdout.strip()
    assert str(uuid.UUID(pid)) == pid
    return pid


def _approve_all(jib: Jib, pid: str) -> None:
    for service in PANEL:
        r = jib.run("jib", "vote", pid, "approve", "--as", service, "--reason",
                    f"{SECRET_GROUNDS} agreed", key=service)
        assert r.exit_code == 0, r.stderr


def _consensus(jib: Jib) -> None:
    r = jib.run("jib", "consensus", "--until-idle", "2", "--tick-interval", "0", key=JIB_OWNER)
    assert r.exit_code == 0, r.stderr
    assert SECRET_GROUNDS not in r.stdout + r.stderr


@pytest.mark.timeout(180)
def test_propose_vote_decide_and_consult_as_participants(jib: Jib, tmp_path):
    member = _propose(jib, tmp_path, "P-M1")
    _approve_all(jib, member)
    removed = _propose(jib, tmp_path, "P-M2")
    _approve_all(jib, removed)
    _consensus(jib)
    removal = _propose(jib, tmp_path, "P-M2", "remove")
    _approve_all(jib, removal)
    _consensus(jib)

    shown = jib.run("jib", "show", member, "--as", "vsse", "--json")
    assert shown.exit_code == 0, shown.stderr
    body = json.loads(shown.stdout)
    assert (body["state"], body["action"], body["subject_id"]) == ("adopted", "insert", "P-M1")
    assert SECRET_GROUNDS in body["grounds"]
    assert sorted(v["service"] for v in body["votes"]) == sorted(PANEL)
    text = jib.run("jib", "show", removal, "--as", "tfl:brussel")  # the proposer
    assert text.exit_code == 0
    assert "state: adopted" in text.stdout
    members = jib.run("jib", "members", "--as", "ocam", "--json")
    assert [json.loads(line)["subject_id"] for line in members.stdout.splitlines()] == ["P-M1"]
    history = jib.run("jib", "list", "--as", "ocam", "--subject", "P-M2")
    assert [line.split()[2:5] for line in history.stdout.splitlines()] == [
        ["insert", "P-M2", "adopted"], ["remove", "P-M2", "adopted"]]
    assert jib.run("jib", "list", "--as", "vsse", "--state", "open").stdout == ""
    assert len(jib.consultations()) == 5


@pytest.mark.timeout(180)
def test_a_non_participant_learns_nothing_a_stranger_would_not(jib: Jib, tmp_path):
    member = _propose(jib, tmp_path, "P-M3")
    _approve_all(jib, member)
    _consensus(jib)
    unknown_pid = str(uuid.uuid4())
    pairs = [
        (("members", "--subject", "P-M3"), ("members", "--subject", "P-NOBODY")),
        (("show", member), ("show", unknown_pid)),
        (("list", "--subject", "P-M3"), ("list", "--subject", "P-NOBODY")),
        (("members",), ("members",)),
    ]
    for known, unknown in pairs:
        for extra in ((), ("--json",)):
            a = jib.run("jib", *known, "--as", OUTSIDER, *extra)
            b = jib.run("jib", *unknown, "--as", OUTSIDER, *extra)
            assert (a.stdout, a.exit_code) == (
                b.stdout.replace(unknown_pid, member).replace("P-NOBODY", "P-M3"), b.exit_code)
    assert jib.run("jib", "members", "--as", OUTSIDER, "--subject", "P-M3").stdout == \
        "not a member\n"
    # a participant does see it, and gets the same "unknown" answer for an unknown person
    seen = jib.run("jib", "members", "--as", "polloc", "--subject", "P-M3")
    assert (seen.exit_code, seen.stdout.split()[0]) == (0, "P-M3")
    assert jib.run("jib", "members", "--as", "polloc", "--subject", "P-NOBODY").exit_code == 1
    # every consultation is logged, with what the outsider was not told
    log = jib.consultations()
    assert len(log) == 4 * 2 * 2 + 3
    outsider = {(r["verb"], r["target"], r["answer_class"]) for r in log
                if r["party"] == OUTSIDER}
    assert ("members", "P-M3", "no_access") in outsider
    assert ("members", "P-NOBODY", "unknown") in outsider
    assert ("show", member, "no_access") in outsider
    assert ("show", unknown_pid, "unknown") in outsider


@pytest.mark.timeout(120)
def test_usage_errors_name_the_option_or_field_never_the_content(jib: Jib, tmp_path):
    grounds = tmp_path / "g.txt"
    grounds.write_text(SECRET_GROUNDS, "utf-8")
    base = ("jib", "propose", "--action", "insert", "--grounds", str(grounds))
    cases = [  # (arguments, signing key, what the error names)
        ((*base, "--as", "tfl:atlantis", "--subject", "P-1"), "tfl:brussel", "--as"),
        ((*base, "--as", "tfl:brussel", "--subject", "Jane Doe"), "tfl:brussel", "subject_id"),
        ((*base, "--as", "tfl:brussel", "--subject", "P-1"), "vsse", "registered for vsse"),
        ((*base, "--as", "tfl:brussel", "--subject", "P-1"), None,
         "PLANR_SIGNING_KEY is not set"),
        ((*base, "--as", "vsse", "--subject", "P-1"), "vsse", "--arrondissement"),
        (("jib", "vote", "not-a-uuid", "approve", "--as", "vsse", "--reason", SECRET_GROUNDS),
         "vsse", "proposal_id"),
        (("jib", "vote", str(uuid.uuid4()), "approve", "--as", "tfl:brussel", "--reason", "x"),
         "tfl:brussel", "service"),
        (("jib", "show", "P-1", "--as", "vsse"), None, "PROPOSAL"),
        (("jib", "list", "--as", "vsse", "--state", "pending"), None, "--state"),
    ]
    for args, key, named in cases:
        r = jib.run(*args, key=key)
        assert (r.exit_code, named in r.stderr) == (2, True), (args, r.stderr)
        assert SECRET_GROUNDS not in r.stdout + r.stderr
        assert "Jane Doe" not in r.stderr
    # refused before anything was signed, sent or consulted: the store was never even opened
    assert not (tmp_path / "data" / "jib.db").exists()

@pytest.mark.timeout(300)
def test_run_demo_summary_shows_jib_proposals_adopted_rejected_and_expired(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLANR_")}
    env.update({"PLANR_DEMO_SIGNALS": "50", "PLANR_DATA_DIR": str(tmp_path / "data"),
                "PLANR_SESSION_TIMEOUT_MS": str(SESSION_TIMEOUT_MS)})
    done = subprocess.run([PLANR, "run", "--demo"], env=env, capture_output=True, text=True,
                          timeout=280, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert "JIB (Joint Information Box)" in out
    for label, count in (("proposals", 5), ("adopted", 3), ("rejected", 1), ("expired", 1),
                         ("open", 0), ("votes refused", 3), ("members now", 1)):
        assert re.search(rf"^\s+{label}\s+{count}$", out, re.MULTILINE), (label, out)
    for reason in ("already_voted", "decided", "not_required"):
        assert re.search(rf"^\s+{reason}\s+1$", out, re.MULTILINE), reason
    assert SECRET_GROUNDS not in out + done.stderr


@pytest.mark.parametrize("owner", ["tfl:brussel", "jib"])
def test_keys_generate_makes_keys_for_local_taskforces_and_the_jib(tmp_path, owner):
    env = {k: None for k in os.environ if k.startswith("PLANR_")} | {
        "PLANR_DATA_DIR": str(tmp_path / "data")}
    r = CliRunner().invoke(app, ["keys", "generate", "--owner", owner], env=env)
    assert r.exit_code == 0, r.output
    registry = KeyRegistry.load(tmp_path / "data" / "keys" / "registry.yaml")
    assert [e.owner for e in registry.entries] == [owner]
    bad = CliRunner().invoke(app, ["keys", "generate", "--owner", "tfl:atlantis"], env=env)
    assert bad.exit_code == 2
    assert "tfl:<arrondissement>" in bad.output
