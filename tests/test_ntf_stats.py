"""The NTF statistics on the real embedded broker: NtfFacts written as the router writes them
are counted once by event id, closed months only are published, a single report shows as
``<5``, no suppressed entry can be worked out from the published ones (independent solvers,
tests/ntf_oracle.py), and neither a replay (under another policy version), a late fact, a
conflicting id nor a restart changes what the NTF was shown."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import select

from consumers.inbox import read_ntf
from consumers.metrics import StoreMetrics
from consumers.ntf.aggregator import NtfAggregator
from consumers.outbox import Outbox
from consumers.reader import read_topic
from consumers.store import Database, sqlite_url
from consumers.store.tables import ntf_counts, ntf_events, ntf_published
from planr.domain import Recipient, RecipientClass
from planr.kafka import KafkaConnection, make_producer
from planr.signing import AGGREGATOR as AGGREGATOR_KEY
from planr.signing import ROUTER, sign_headers
from planr.topics import Topics, provision
from scenarios.keys import KeyRing
from schemas.codec import Codec
from schemas.names import DEAD_LETTER, NTF_FACT
from tests.conftest import key_env
from tests.ntf_oracle import STAR, determined_by_totals, other_value_exists

pytestmark = pytest.mark.kafka
PLANR = str(Path(sys.executable).parent / "planr")
NTF = Recipient(RecipientClass.NTF)
T = 5
NOV_10 = datetime(2026, 11, 10, tzinfo=UTC)  # September and October closed, November open


@dataclass(frozen=True)
class Fact:
    event_id: str
    period: str
    arrondissement: str
    phenomena: tuple[str, ...]


def history() -> list[Fact]:
    """Three months of facts: one single report in Eupen, a small cell that its row total
    would give away, multi-phenomenon signals, signals without a phenomenon."""
    spec = [("2026-09", "eupen", ("left_wing",), 1), ("2026-09", "brussel", ("left_wing",), 30),
            ("2026-09", "brussel", ("salafism",), 3), ("2026-09", "gent", ("salafism",), 8),
            ("2026-09", "gent", ("left_wing", "right_wing"), 9),
            ("2026-10", "brussel", ("right_wing",), 6), ("2026-10", "antwerpen", (), 8),
            ("2026-10", "brussel", ("left_wing",), 2), ("2026-10", "antwerpen", ("other",), 11),
            ("2026-11", "brussel", ("left_wing",), 4)]
    out = []
    for period, arr, phenomena, n in spec:
        out += [Fact(f"{period}-{arr}-{'+'.join(phenomena)}-{i}", period, arr, phenomena)
                for i in range(n)]
    return out


def cells_of(facts: list[Fact]) -> Counter[tuple[str, str, str]]:
    """The oracle: signals per (month, arrondissement, phenomenon), 'none' for none."""
    out: Counter[tuple[str, str, str]] = Counter()
    for f in facts:
        for ph in f.phenomena or ("none",):
            out[(f.period, f.arrondissement, ph)] += 1
    return out


async def write_facts(conn: KafkaConnection, topics: Topics, codec: Codec, keys: KeyRing,
                      facts: list[Fact], policy_version: str) -> None:
    """NtfFacts as the router writes them (routing/router.py ``_ntf_fact``): key event id.
    The one place that produces facts in these tests."""
    producer = make_producer(conn)
    await producer.start()
    try:
        values = [codec.encode(NTF_FACT, {
            "event_id": f.event_id, "period": f.period, "arrondissement": f.arrondissement,
            "phenomena": sorted(f.phenomena), "policy_version": policy_version}) for f in facts]
        futures = [await producer.send(topics.ntf_facts, key=f.event_id.encode(), value=v,
                                       headers=sign_headers(keys.signer(ROUTER),
                                                            topics.ntf_facts, v))
                   for f, v in zip(facts, values, strict=True)]
        for fut in futures:
            await fut
    finally:
        await producer.stop()


async def aggregate(conn: KafkaConnection, topics: Topics, codec: Codec, keys: KeyRing,
                    db: Database, now: datetime, *, send: bool = True) -> NtfAggregator:
    """One run of the aggregator until idle (``send=False``: it stops before its outbox is
    sent, as a crash would)."""
    metrics = StoreMetrics(CollectorRegistry())
    outbox = (Outbox(conn=conn, topics=topics, metrics=metrics,
                     signer=keys.signer(AGGREGATOR_KEY)) if send else None)
    clock: Callable[[], datetime] = lambda: now  # noqa: E731
    agg = NtfAggregator(conn=conn, db=db, topics=topics, codec=codec, metrics=metrics,
                        registry=keys.registry, threshold=T,
                        policy_version="sha256:aggregator", now=clock, interval=0.2,
                        outbox=outbox)
    try:
        async with agg:
            await agg.run(until_idle=1.0)
    finally:
        if outbox is not None:
            await outbox.stop()
    return agg


async def rows(db: Database, table: Any) -> list[tuple[Any, ...]]:
    async with db.engine.connect() as c:
        return sorted(tuple(r) for r in (await c.execute(select(table))).all())


async def stored_counts(db: Database) -> Counter[tuple[str, str, str]]:
    return Counter({(p, a, ph): n for p, a, ph, n in await rows(db, ntf_counts)})


async def raw_ntf(conn: KafkaConnection, topics: Topics) -> list[bytes]:
    return [rec.value async for rec in read_topic(conn, topics.delivery(NTF))]


@pytest.fixture
async def setup(conn, topics, tmp_path):
    await provision(conn, topics, [topics.ntf_facts, topics.delivery(NTF), topics.dead_letter])
    async with Database(sqlite_url(tmp_path, "ntf.db")) as db:
        yield db


def assert_protected(month: list[dict[str, Any]], truth: Counter[tuple[str, str]]) -> None:
    """A published month against the oracle: every non-zero cell and total present, shown
    counts true and at least T, suppressed ones not recoverable by either solver."""
    values = dict(truth)
    for (arr, ph), n in truth.items():
        for key in ((arr, STAR), (STAR, ph), (STAR, STAR)):
            values[key] = values.get(key, 0) + n
    shown = {(c["arrondissement"], c["phenomenon"]): c["shown"] for c in month}
    assert set(shown) == set(values)
    for c in month:
        key = (c["arrondissement"], c["phenomenon"])
        if c["suppressed"]:
            assert c["count"] is None
            assert c["shown"] in {f"<{T}", "x"}
            assert (c["shown"] == f"<{T}") == (values[key] < T)
        else:
            assert c["count"] == values[key] >= T
            assert c["shown"] == str(values[key])
    hidden = {k for k, mark in shown.items() if not mark.isdigit()}
    assert determined_by_totals(values, hidden) == set()
    for key in hidden:
        assert other_value_exists(values, shown, T, key), key


def by_month(cells: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for c in cells:
        out.setdefault(c["period"], []).append(c)
    return out


async def test_closed_months_are_published_protected_and_a_replay_changes_nothing(
    conn, topics, codec, setup, keys
):
    db, facts = setup, history()
    await write_facts(conn, topics, codec, keys, facts, "sha256:first")
    first = await aggregate(conn, topics, codec, keys, db, NOV_10)
    truth = cells_of(facts)
    assert first.facts == len(facts)
    assert await stored_counts(db) == truth  # every signal counted once, open month too

    months = by_month(await read_ntf(conn, topics, codec))
    assert sorted(months) == ["2026-09", "2026-10"]  # November is still open
    eupen = [c for c in months["2026-09"] if (c["arrondissement"], c["phenomenon"])
             == ("eupen", "left_wing")]
    assert [(c["shown"], c["count"], c["suppressed"]) for c in eupen] == [("<5", None, True)]
    for period, month in months.items():
        assert_protected(month, Counter({(a, ph): n for (p, a, ph), n in truth.items()
                                         if p == period}))
        assert {c["threshold"] for c in month} == {T}
        assert {c["policy_version"] for c in month} == {"sha256:aggregator"}

    published, wire = await rows(db, ntf_published), await raw_ntf(conn, topics)
    await write_facts(conn, topics, codec, keys, facts, "sha256:replay2")  # another policy version
    await write_facts(conn, topics, codec, keys, facts, "sha256:first")
    again = await aggregate(conn, topics, codec, keys, db, NOV_10)
    assert (again.facts, again.stats.duplicates, again.stats.bad) == (0, 2 * len(facts), 0)
    assert await stored_counts(db) == truth
    assert await rows(db, ntf_published) == published
    assert await raw_ntf(conn, topics) == wire


async def test_a_late_fact_is_counted_but_a_published_month_is_final_and_a_reused_id_is_refused(
    conn, topics, codec, setup, keys
):
    db, facts = setup, history()
    await write_facts(conn, topics, codec, keys, facts, "v1")
    await aggregate(conn, topics, codec, keys, db, NOV_10)
    wire = await raw_ntf(conn, topics)
    late = Fact("late-1", "2026-09", "eupen", ("left_wing",))
    reused = Fact(facts[0].event_id, "2026-09", "gent", ("left_wing",))  # other content
    await write_facts(conn, topics, codec, keys, [late, reused], "v1")
    run = await aggregate(conn, topics, codec, keys, db, NOV_10)
    assert (run.facts, run.stats.bad) == (1, 1)
    assert await stored_counts(db) == cells_of([*facts, late])
    assert [r[0] for r in await rows(db, ntf_events) if r[-1]] == ["late-1"]  # marked late
    assert await raw_ntf(conn, topics) == wire  # the September table is not revised

    dead = [codec.decode(rec.value, DEAD_LETTER) async for rec in
            read_topic(conn, topics.dead_letter)]
    assert [d["reason"] for d in dead] == ["event_id_conflict"]

    await aggregate(conn, topics, codec, keys, db, datetime(2026, 12, 4, tzinfo=UTC))
    months = by_month(await read_ntf(conn, topics, codec))
    assert sorted(months) == ["2026-09", "2026-10", "2026-11"]
    assert [c["shown"] for c in months["2026-11"]] == ["<5"] * 4  # one cell of 4, totals


async def test_a_crash_before_the_outbox_is_sent_publishes_each_entry_once_after_restart(
    conn, topics, codec, setup, keys
):
    db = setup
    await write_facts(conn, topics, codec, keys, history(), "v1")
    crashed = await aggregate(conn, topics, codec, keys, db, NOV_10, send=False)
    assert crashed.published == ["2026-09", "2026-10"]
    assert await raw_ntf(conn, topics) == []
    await aggregate(conn, topics, codec, keys, db, NOV_10)
    await aggregate(conn, topics, codec, keys, db, NOV_10)
    ids = [codec.decode(v, "be.planr.view.NtfAggregate")["aggregate_id"]
           for v in await raw_ntf(conn, topics)]
    assert len(ids) == len(await rows(db, ntf_published)) == len(set(ids)) > 0


def planr(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PLANR, *args], env=env, capture_output=True, text=True, timeout=120,
                          check=False)


async def test_planr_aggregate_and_planr_inbox_ntf_show_the_closed_months(
    conn, topics, codec, setup, keys, tmp_path
):
    assert setup is not None  # the topics exist
    await write_facts(conn, topics, codec, keys, history(), "v1")
    env = {**os.environ, "PLANR_BOOTSTRAP_SERVERS": conn.bootstrap_servers,
           "PLANR_TOPIC_PREFIX": topics.prefix, "PLANR_LOG_LEVEL": "warning",
           "PLANR_NTF_DB_URL": sqlite_url(tmp_path, "cli-ntf.db"),
           **key_env(keys, AGGREGATOR_KEY)}
    done = planr(["aggregate", "--until-idle", "1", "--at", "2026-11-10", "--interval", "0.2"],
                 env)
    assert done.returncode == 0, done.stderr
    assert "2 closed month(s) published" in done.stderr
    shown = planr(["inbox", "ntf"], env)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert [line.split() for line in lines if line.startswith("2026-09  eupen")] == [
        ["2026-09", "eupen", "left_wing", "<5"], ["2026-09", "eupen", "*", "<5"]]
    assert {line[:7] for line in lines} == {"2026-09", "2026-10"}
