"""Inbox-service throughput on SQLite and PostgreSQL (a benchmark, not a test).

N deliveries to the local taskforces' inboxes (``tfl`` view, spread over four arrondissements'
topics), signed by a router key (in chunks, as the router signs, and one signature per record,
on two sets of topics), are produced to a real embedded Tansu broker; then a fresh
inbox service consumes them all (verify the signature, decode the envelope and the view,
fingerprint, deduplicate by delivery id, upsert, offsets: one transaction per batch of 2000).

    python -m benchmarks.inboxes [DELIVERIES]

PostgreSQL as for :mod:`benchmarks.projector`, which also explains the verification figures.
"""

from __future__ import annotations

import asyncio
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path

from prometheus_client import CollectorRegistry

from benchmarks.projector import (
    SIGNINGS,
    _produce,
    bench_pg_url,
    figures,
    on_stores,
    report,
    signed_as,
    store_key,
)
from consumers.inboxes import InboxService
from consumers.metrics import StoreMetrics
from consumers.store import Database
from planr.broker import EmbeddedBroker
from planr.domain import Recipient, RecipientClass
from planr.kafka import KafkaConnection
from planr.signing import ROUTER, KeyRegistry
from planr.topics import Topics, provision
from routing import DEFAULT_POLICY
from routing.setup import prepare
from scenarios.ftf import ftf_history, tfl_delivery
from scenarios.keys import throwaway_keys

ARRONDISSEMENTS = ("brussel", "antwerpen", "oost-vlaanderen", "liege")


async def _store(conn: KafkaConnection, topics: Topics, url: str, count: int,
                 registry: KeyRegistry, *, key: str, check_process: bool) -> dict[str, float]:
    setup = prepare(DEFAULT_POLICY)
    async with Database(url) as db:
        service = InboxService(
            conn=conn, db=db, topics=topics, codec=setup.codec,
            metrics=StoreMetrics(CollectorRegistry()), registry=registry,
            recipients=[Recipient(RecipientClass.TFL, a) for a in ARRONDISSEMENTS],
            check_process=check_process)
        async with service:
            started = time.perf_counter()
            await service.catch_up()
            elapsed = time.perf_counter() - started
        assert service.stored == count, (service.stored, service.stats)
    return figures(key, count, elapsed, service.stats.verify_seconds)


async def bench(count: int = 50_000, pg_url: str | None = None) -> dict[str, float]:
    """Deliveries stored per second, per store (and the verification figures)."""
    setup = prepare(DEFAULT_POLICY)
    rng = random.Random(11)
    signals = ftf_history(rng, count)
    with tempfile.TemporaryDirectory() as tmp:
        keys = throwaway_keys(Path(tmp) / "keys", [ROUTER])
        async with EmbeddedBroker(log_file=Path(tmp) / "tansu.log") as broker:
            conn = KafkaConnection(broker.bootstrap_servers)
            by_signing = {s: Topics(f"bench{uuid.uuid4().hex[:8]}") for s in SIGNINGS}
            for signing, topics in by_signing.items():
                names = [topics.delivery(Recipient(RecipientClass.TFL, a))
                         for a in ARRONDISSEMENTS]
                await provision(conn, topics, names)
                for i, name in enumerate(names):
                    values = [tfl_delivery(setup, s, ARRONDISSEMENTS[i])
                              for s in signals[i :: len(names)]]
                    await _produce(conn, name,
                                   signed_as(signing, keys.signer(ROUTER), name, values))
            return await on_stores(
                pg_url, Path(tmp),
                lambda store, url, signing, check: _store(
                    conn, by_signing[signing], url, count, keys.registry,
                    key=store_key(store, signing, check), check_process=check))


def run(count: int = 50_000) -> dict[str, float]:
    """Measure, print and return the figures (what ``make bench`` calls)."""
    results = asyncio.run(bench(count, bench_pg_url()))
    report(f"inbox service throughput, {count} tfl deliveries from embedded Tansu:",
           "deliveries", results)
    return results


if __name__ == "__main__":
    run(int(sys.argv[1]) if len(sys.argv) > 1 else 50_000)
