"""Router throughput on the embedded broker: signals routed per second, end to end
(verify the agency's signature, decode, decide, encode and sign every delivery and audit
record, produce, wait for acks, commit)."""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from prometheus_client import CollectorRegistry

from consumers.ledger import StoreLedger
from consumers.store import Database, sqlite_url
from planr.broker import EmbeddedBroker
from planr.kafka import KafkaConnection
from planr.signing import ROUTER
from planr.telemetry import Metrics
from planr.topics import Topics, provision
from producers.publisher import Publisher
from routing import DEFAULT_POLICY
from routing.router import Router
from routing.setup import RoutingSetup, prepare
from scenarios.keys import throwaway_keys
from scenarios.signals import generate


async def run(n: int = 20_000) -> dict[str, float]:
    setup = prepare(DEFAULT_POLICY)
    metrics = Metrics(CollectorRegistry())
    topics = Topics("bench")
    with tempfile.TemporaryDirectory() as tmp:
        return await _run(n, setup, metrics, topics, Path(tmp))


async def _run(n: int, setup: RoutingSetup, metrics: Metrics, topics: Topics,
               tmp: Path) -> dict[str, float]:
    keys = throwaway_keys(tmp / "keys")
    async with EmbeddedBroker() as broker:
        conn = KafkaConnection(broker.bootstrap_servers, session_timeout_ms=6_000)
        await provision(conn, topics)
        by_agency: dict = {}  # type: ignore[type-arg]
        for agency, s in generate(n, seed=7):
            by_agency.setdefault(agency, []).append(s)
        t0 = time.perf_counter()
        for agency, batch in by_agency.items():
            async with Publisher(conn=conn, agency=agency, topics=topics, codec=setup.codec,
                                 metrics=metrics, signer=keys.signer(agency)) as pub:
                await pub.publish_many(batch)
        publish_s = time.perf_counter() - t0
        db = Database(sqlite_url(tmp, "ledger.db"))
        router = Router(conn=conn, topics=topics, engine=setup.engine, views=setup.views,
                        codec=setup.codec, metrics=metrics, registry=keys.registry,
                        signer=keys.signer(ROUTER), group_id="bench", ledger=StoreLedger(db))
        async with db, router:
            while not router._consumer.assignment():
                await router._consumer.getmany(timeout_ms=100)
            # the join's first poll may have returned records: they are routed below
            t1 = time.perf_counter()
            stats = await router.run(until_idle=1.0)
            route_s = time.perf_counter() - t1 - 1.0
        outputs = stats.audits + sum(stats.deliveries.values())
        return {
            "signals": float(stats.signals),
            "publish_per_s": n / publish_s,
            "route_signals_per_s": stats.signals / route_s,
            "route_outputs_per_s": outputs / route_s,
        }


def main() -> None:
    r = asyncio.run(run())
    print(f"router: {r['signals']:.0f} signals; publish {r['publish_per_s']:,.0f}/s; "
          f"route {r['route_signals_per_s']:,.0f} signals/s "
          f"({r['route_outputs_per_s']:,.0f} output records/s)")


if __name__ == "__main__":
    main()
