"""Kill-and-restart: the JIB's consensus process, SIGKILLed at random times while it takes
1,000 concurrent proposals with their votes and ticks, still decides every proposal exactly
once, and its whole store (decisions, members, votes, outbox) equals an uninterrupted run's.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from consumers.jib.consensus import JIB_CONSENSUS, JibConsensus
from consumers.jib.panels import DEFAULT_PANELS_FILE, Panels
from consumers.metrics import StoreMetrics
from consumers.store import Database
from planr.parties import JIB_OWNER
from planr.topics import Topics, provision
from producers.jib import JibSubmitter
from routing.jib import JibRouting
from scenarios.jib import concurrent_stream, jib_keys
from schemas.names import JIB_PROPOSAL
from tests.test_store_helpers import BACKENDS, dump, store_url

pytestmark = pytest.mark.kafka

PROPOSALS = 1_000
KILLS = 4
PLANR = str(Path(sys.executable).parent / "planr")
PANELS = Panels.load(DEFAULT_PANELS_FILE)
PROPOSERS = (("tfl:brussel", "brussel"), ("tfl:liege", "liege"), ("vsse", "antwerpen"),
             ("ocam", "hainaut"))
OUTSIDER = "nccn"


def spawn(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as err:
        return subprocess.Popen(
            [PLANR, "jib", "consensus", "--until-idle", "2", "--tick-interval", "0"],
            env=env, stdout=subprocess.DEVNULL, stderr=err)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("backend", BACKENDS)
async def test_sigkill_at_random_times_decides_each_proposal_once_as_an_uninterrupted_run(
    backend, conn, topics: Topics, codec, routing_setup, tmp_path
):
    rng = random.Random(20160322)
    owners = sorted({*PANELS.of("brussel"), OUTSIDER, JIB_OWNER, *(p for p, _ in PROPOSERS)})
    keys = jib_keys(tmp_path / "keys", owners)
    steps = concurrent_stream(rng, PROPOSALS, PANELS.panels, PROPOSERS, OUTSIDER)
    await provision(conn, topics, [*topics.all_jib(), topics.dead_letter])
    async with JibSubmitter(conn=conn, topics=topics, codec=codec) as sub:
        await sub.submit_many((keys.signers[o], n, r) for o, n, r in steps)
    routing = JibRouting(routing_setup.policy.document.jib, routing_setup.policy.version)

    # the uninterrupted run, in process
    started = time.monotonic()
    async with store_url(backend, tmp_path / "ref") as ref_url, Database(ref_url) as ref:
        async with JibConsensus(conn=conn, db=ref, topics=topics, codec=codec,
                                metrics=StoreMetrics(CollectorRegistry()),
                                registry=keys.registry, panels=PANELS, routing=routing) as jib:
            await jib.catch_up()
        expected = await dump(ref)
    took = time.monotonic() - started
    decided = Counter(row[1] for row in expected["jib_decisions"])  # proposal_id column
    assert len(decided) == PROPOSALS
    assert set(decided.values()) == {1}
    outcomes = Counter(row[6] for row in expected["jib_decisions"])
    assert min(outcomes[o] for o in ("adopted", "rejected", "expired")) > 50, outcomes

    # the same, in a separate process SIGKILLed at random times, restarted each time
    end = len(steps)
    async with store_url(backend, tmp_path / "killed") as url, Database(url) as db:
        env = {**os.environ, "PLANR_BOOTSTRAP_SERVERS": conn.bootstrap_servers,
               "PLANR_TOPIC_PREFIX": topics.prefix, "PLANR_JIB_DB_URL": url,
               "PLANR_KEY_REGISTRY": str(keys.registry_path),
               "PLANR_SIGNING_KEY": str(keys.paths[JIB_OWNER]), "PLANR_LOG_LEVEL": "warning"}
        log = tmp_path / "consensus.log"
        kills: list[int] = []  # the stored offset right after each SIGKILL

        async def stored() -> int:
            return (await db.load_offsets(JIB_CONSENSUS)).get((topics.jib_submissions, 0), 0)

        # Each process is killed a random delay after its stored offset passes a random point
        # of the stream: the kills land part-way whatever the machine's speed, at a random
        # time within whatever batch the process is working on, not right after a commit.
        targets = sorted(rng.sample(range(1, end * 9 // 10), KILLS))
        for target in targets:
            proc = spawn(env, log)
            while proc.poll() is None:  # until its stored offset passes the target
                if await stored() >= target:
                    break
                await asyncio.sleep(0.005)
            await asyncio.sleep(rng.uniform(0.0, 0.15))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            await asyncio.to_thread(proc.wait)
            kills.append(await stored())
        proc = spawn(env, log)
        await asyncio.to_thread(proc.wait, timeout=180)
        assert proc.returncode == 0, log.read_text()[-2000:]
        got = await dump(db)

    # killed part-way several times (not before starting, not after the end)
    assert len([k for k in kills if 0 < k < end]) >= 2, (kills, end, took)
    # outbox rows were sent by the killed processes, not by the reference: all but 'sent'
    got["outbox"] = [r[:-1] for r in got["outbox"]]
    expected["outbox"] = [r[:-1] for r in expected["outbox"]]
    assert got.keys() == expected.keys()
    for table in expected:
        assert got[table] == expected[table], table
    assert sum(1 for _, name, _ in steps if name == JIB_PROPOSAL) == PROPOSALS
