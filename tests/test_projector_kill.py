"""Kill-and-restart: the projector and an inbox, SIGKILLed at random points, lose nothing and
apply nothing twice. The final database equals the one of an uninterrupted run."""

from __future__ import annotations

import asyncio
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from consumers.ftf.governance import DEFAULT_ACCESS_FILE, AccessConfig
from consumers.ftf.projector import PROJECTOR as PROJECTOR_NAME
from consumers.ftf.projector import Projector
from consumers.inboxes import INBOXES as INBOXES_NAME
from consumers.inboxes import InboxService
from consumers.metrics import StoreMetrics
from consumers.store import Database
from planr.domain import Recipient, RecipientClass
from planr.kafka import make_producer
from planr.signing import INBOXES, PROJECTOR, ROUTER, Signer, sign_headers
from planr.topics import Topics, provision
from scenarios.ftf import ftf_delivery, ftf_history, tfl_delivery
from scenarios.keys import KeyRing
from tests.conftest import key_env
from tests.test_store_helpers import BACKENDS, dump, store_url

pytestmark = pytest.mark.kafka

EVENTS = 20_000
INBOX_EVENTS = 20_000
KILLS = 5
PLANR = str(Path(sys.executable).parent / "planr")
TFL = Recipient(RecipientClass.TFL, "brussel")



async def produce(conn: Any, topic: str, values: list[bytes], signer: Signer | None = None) -> None:
    """Produce ``values`` to ``topic``, each signed by ``signer`` when given."""
    producer = make_producer(conn)
    await producer.start()
    try:
        futures = [await producer.send(topic, value=v, headers=sign_headers(signer, topic, v)
                                       if signer is not None else None) for v in values]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as err:
        return subprocess.Popen([PLANR, *args], env=env, stdout=subprocess.DEVNULL, stderr=err)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("backend", BACKENDS)
async def test_sigkill_loses_nothing_and_applies_nothing_twice(
    backend, conn, topics: Topics, routing_setup, tmp_path, keys: KeyRing
):
    rng = random.Random(20150821)
    ftf_topic = topics.delivery(Recipient(RecipientClass.FTF_DB))
    tfl_topic = topics.delivery(TFL)
    await provision(conn, topics, [ftf_topic, tfl_topic, topics.dead_letter,
                                   topics.ftf_removals])
    signals = ftf_history(rng, EVENTS)
    ftf_values = [ftf_delivery(routing_setup, s) for s in signals]
    ftf_values += [*rng.sample(ftf_values, 300), b"not a delivery"]  # replays and junk
    tfl_values = [tfl_delivery(routing_setup, s) for s in signals[:INBOX_EVENTS]]
    tfl_values += tfl_values[:200]
    await produce(conn, ftf_topic, ftf_values, keys.signer(ROUTER))
    await produce(conn, tfl_topic, tfl_values, keys.signer(ROUTER))

    # the uninterrupted run, in process
    access = AccessConfig.load(DEFAULT_ACCESS_FILE)
    metrics = StoreMetrics(CollectorRegistry())
    async with store_url(backend, tmp_path / "ref") as ref_url, Database(ref_url) as ref:
        async with Projector(conn=conn, db=ref, topics=topics, codec=routing_setup.codec,
                             access=access, metrics=metrics, registry=keys.registry) as p:
            await p.catch_up()
        async with InboxService(conn=conn, db=ref, topics=topics, codec=routing_setup.codec,
                                metrics=metrics, registry=keys.registry,
                                recipients=[TFL]) as s:
            await s.catch_up()
        expected = await dump(ref)
    assert len(expected["applied_events"]) == EVENTS
    assert len(expected["inbox_deliveries"]) == INBOX_EVENTS

    # the same, in separate processes killed at random points
    async with store_url(backend, tmp_path / "killed") as url:
        env = {**os.environ, "PLANR_BOOTSTRAP_SERVERS": conn.bootstrap_servers,
               "PLANR_TOPIC_PREFIX": topics.prefix, "PLANR_FTF_DB_URL": url,
               "PLANR_INBOX_DB_URL": url, "PLANR_LOG_LEVEL": "warning"}
        commands = [["ftf", "project", "--until-idle", "2"],
                    ["inboxes", "--recipient", str(TFL), "--until-idle", "2"]]
        envs = [{**env, **key_env(keys, PROJECTOR)}, {**env, **key_env(keys, INBOXES)}]
        names = [(PROJECTOR_NAME, ftf_topic), (INBOXES_NAME, tfl_topic)]
        kills: list[list[int]] = [[], []]  # stored offset right after each SIGKILL

        async def stored(i: int) -> int:
            name, topic = names[i]
            return (await db.load_offsets(name)).get((topic, 0), 0)

        async with Database(url) as db:  # migrate once, before the processes race
            logs = [tmp_path / "projector.log", tmp_path / "inboxes.log"]
            # Each process is killed, in each round, a random delay after its stored offset
            # passes a random point of its stream: the kills land part-way, at a random time
            # within whatever batch the process is working on, not right after a commit.
            sizes = [len(ftf_values), len(tfl_values)]
            targets = [sorted(rng.sample(range(1, n * 9 // 10), KILLS)) for n in sizes]
            delays = [[rng.uniform(0.0, 0.15) for _ in range(KILLS)] for _ in sizes]
            for round_ in range(KILLS):
                procs = [spawn(c, e, log) for c, e, log in zip(commands, envs, logs, strict=True)]
                due = [math.inf, math.inf]  # when each is to be killed, once its target passed
                while any(p.poll() is None for p in procs):
                    for i, proc in enumerate(procs):
                        if proc.poll() is not None:
                            continue
                        if due[i] == math.inf and await stored(i) >= targets[i][round_]:
                            due[i] = time.monotonic() + delays[i][round_]
                        if time.monotonic() >= due[i]:
                            proc.send_signal(signal.SIGKILL)
                            proc.wait()
                            kills[i].append(await stored(i))
                    await asyncio.sleep(0.005)
            procs = [spawn(c, e, log) for c, e, log in zip(commands, envs, logs, strict=True)]
            for proc, log in zip(procs, logs, strict=True):
                await asyncio.to_thread(proc.wait, timeout=180)
                assert proc.returncode == 0, log.read_text()[-2000:]
            got = await dump(db)
    # both processes were killed part-way, several times (not before starting, not at the end)
    assert len([k for k in kills[0] if 0 < k < len(ftf_values)]) >= 2, kills
    assert len([k for k in kills[1] if 0 < k < len(tfl_values)]) >= 2, kills
    # outbox rows were sent by the processes, not by the reference: compare all but 'sent'
    got["outbox"] = [r[:-1] for r in got["outbox"]]
    expected["outbox"] = [r[:-1] for r in expected["outbox"]]
    assert got.keys() == expected.keys()
    for table in expected:
        assert got[table] == expected[table], table
