"""Projector throughput on SQLite and PostgreSQL (a benchmark, not a test).

For each store: N ``ftf-db`` deliveries (600 subjects, six agencies, OCAM decisions) are
produced to a real embedded Tansu broker, signed by a router key, then a fresh projector
consumes them all (verify the signature, decode, governance, fiche upserts, contributions,
offsets: one transaction per batch of 2000).

The deliveries are signed twice, on two topics: in chunks of
:data:`planr.batching.CHUNK_RECORDS` records, as the router's ``BatchSender`` signs them (the
figures ``sqlite`` and ``postgresql``), and one signature per record (``sqlite_single``,
``postgresql_single``: one Ed25519 verification per record, the worst case).

    python -m benchmarks.projector [EVENTS]

PostgreSQL is measured when ``PLANR_BENCH_PG_URL`` (or ``PLANR_TEST_PG_URL``) names a server
(any database on it: the benchmark creates and drops its own).

Each figure is measured twice, on fresh databases: as the service runs the projector, the
records checked (signature, decoding) in a process of its own while the batch before is
written (``check_process``, :mod:`consumers.checking`: ``sqlite``), then checked in the
projector's own process (``sqlite_in_process``). The inbox benchmark does the same (its
service checks in process). Besides events per second, each reports the
share of the run spent verifying the records' signatures (``<figure>_verify_share``, in the
checking process for the first) and, checked in process, the rate the rest of the projector
would reach with verification free (``<figure>_without_verify``).
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from prometheus_client import CollectorRegistry
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine

from consumers.ftf.governance import DEFAULT_ACCESS_FILE, AccessConfig
from consumers.ftf.projector import Projector
from consumers.metrics import StoreMetrics
from consumers.store import Database, normalize_url, sqlite_url
from planr.batching import CHUNK_RECORDS
from planr.broker import EmbeddedBroker
from planr.domain import Recipient, RecipientClass
from planr.kafka import KafkaConnection, make_producer
from planr.signing import ROUTER, KeyRegistry, Signer, sign_chunk
from planr.topics import Topics, provision
from routing import DEFAULT_POLICY
from routing.setup import prepare
from scenarios.ftf import ftf_delivery, ftf_history
from scenarios.keys import SignedValue, signed, throwaway_keys


async def _produce(conn: KafkaConnection, topic: str, values: list[SignedValue]) -> None:
    producer = make_producer(conn)
    await producer.start()
    try:
        futures = [await producer.send(topic, value=v, headers=h) for v, h in values]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


#: How the benchmark's records are signed: as the router does, and one signature per record.
SIGNINGS = ("chunk", "single")


def signed_as(signing: str, signer: Signer, topic: str, values: list[bytes]
              ) -> list[SignedValue]:
    """``values`` with their signature headers: ``chunk`` (as the router's ``BatchSender``
    signs a topic's records, :data:`CHUNK_RECORDS` at a time) or ``single``."""
    if signing == "single":
        return signed(signer, topic, values)
    out: list[SignedValue] = []
    for i in range(0, len(values), CHUNK_RECORDS):
        chunk = values[i : i + CHUNK_RECORDS]
        out.extend(zip(chunk, sign_chunk(signer, [(topic, v) for v in chunk]), strict=True))
    return out


def store_key(store: str, signing: str, check_process: bool = True) -> str:
    """The figure's name: ``sqlite`` (chunk-signed, as routed) or ``sqlite_single``; with
    ``_in_process`` when the consumer checks its records in its own process."""
    key = store if signing == "chunk" else f"{store}_{signing}"
    return key if check_process else f"{key}_in_process"


def figures(key: str, records: int, elapsed: float, verify: float) -> dict[str, float]:
    """Records per second and the verification share; checked in process, also the rate
    without verification (in a checking process, it runs beside the rest)."""
    out = {key: records / elapsed, f"{key}_verify_share": verify / elapsed}
    if key.endswith("_in_process"):
        out[f"{key}_without_verify"] = records / max(elapsed - verify, 1e-9)
    return out


async def _project(conn: KafkaConnection, topics: Topics, url: str, events: int,
                   registry: KeyRegistry, *, key: str, check_process: bool) -> dict[str, float]:
    setup = prepare(DEFAULT_POLICY)
    async with Database(url) as db:
        projector = Projector(
            conn=conn, db=db, topics=topics, codec=setup.codec,
            access=AccessConfig.load(DEFAULT_ACCESS_FILE),
            metrics=StoreMetrics(CollectorRegistry()), registry=registry,
            check_process=check_process)
        async with projector:  # the checking process starts here, before the clock
            started = time.perf_counter()
            await projector.catch_up()
            elapsed = time.perf_counter() - started
        assert projector.stats.records == events, projector.stats
    return figures(key, events, elapsed, projector.stats.verify_seconds)


async def _pg_database(admin_url: str, name: str, *, drop: bool) -> str:
    admin = make_url(normalize_url(admin_url))
    engine = create_async_engine(admin, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as c:
            if drop:
                await c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            else:
                await c.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        await engine.dispose()
    return admin.set(database=name).render_as_string(hide_password=False)


#: checked in a process of their own (as the services run), then in the consumer's process
CHECK_PROCESS = (True, False)


async def on_stores(pg_url: str | None, tmp: Path,
                    measure: Callable[[str, str, str, bool], Awaitable[dict[str, float]]]
                    ) -> dict[str, float]:
    """``measure(store, url, signing, check_process)`` for each of :data:`SIGNINGS` and
    :data:`CHECK_PROCESS`, each on a fresh SQLite file, then on a fresh PostgreSQL
    database."""
    results: dict[str, float] = {}
    runs = [(s, c) for s in SIGNINGS for c in CHECK_PROCESS]
    for signing, check in runs:
        url = sqlite_url(tmp, f"{store_key('sqlite', signing, check)}.db")
        results.update(await measure("sqlite", url, signing, check))
    if pg_url:
        for signing, check in runs:
            name = f"planr_bench_{uuid.uuid4().hex[:8]}"
            url = await _pg_database(pg_url, name, drop=False)
            try:
                results.update(await measure("postgresql", url, signing, check))
            finally:
                await _pg_database(pg_url, name, drop=True)
    return results


async def bench(events: int = 50_000, pg_url: str | None = None) -> dict[str, float]:
    """Events per second per store (and the verification figures, see the module doc)."""
    setup = prepare(DEFAULT_POLICY)
    values = [ftf_delivery(setup, s) for s in ftf_history(random.Random(7), events)]
    with tempfile.TemporaryDirectory() as tmp:
        keys = throwaway_keys(Path(tmp) / "keys", [ROUTER])
        async with EmbeddedBroker(log_file=Path(tmp) / "tansu.log") as broker:
            conn = KafkaConnection(broker.bootstrap_servers)
            by_signing = {s: Topics(f"bench{uuid.uuid4().hex[:8]}") for s in SIGNINGS}
            for signing, topics in by_signing.items():
                topic = topics.delivery(Recipient(RecipientClass.FTF_DB))
                await provision(conn, topics, [topic])
                await _produce(conn, topic,
                               signed_as(signing, keys.signer(ROUTER), topic, values))
            return await on_stores(
                pg_url, Path(tmp),
                lambda store, url, signing, check: _project(
                    conn, by_signing[signing], url, events, keys.registry,
                    key=store_key(store, signing, check), check_process=check))


def bench_pg_url() -> str | None:
    return os.environ.get("PLANR_BENCH_PG_URL") or os.environ.get("PLANR_TEST_PG_URL")


def report(title: str, unit: str, results: dict[str, float]) -> None:
    print(title)
    for store in ("sqlite", "postgresql"):
        if store not in results:
            print(f"  {store:<12} (not measured: set PLANR_BENCH_PG_URL)")
            continue
        for signing in SIGNINGS:
            key, inside = store_key(store, signing), store_key(store, signing, False)
            print(f"  {store:<12} {signing:<6} {results[key]:>10,.0f} {unit}/s  checking in "
                  f"its own process; {results[inside]:,.0f}/s in the consumer's (verification "
                  f"{results[inside + '_verify_share']:.0%} of the time; without it "
                  f"{results[inside + '_without_verify']:,.0f}/s)")


def run(events: int = 50_000) -> dict[str, float]:
    """Measure, print and return the figures (what ``make bench`` calls)."""
    results = asyncio.run(bench(events, bench_pg_url()))
    report(f"projector throughput, {events} ftf-db deliveries from embedded Tansu:", "events",
           results)
    return results


if __name__ == "__main__":
    run(int(sys.argv[1]) if len(sys.argv) > 1 else 50_000)
