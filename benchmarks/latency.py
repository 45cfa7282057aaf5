"""Latency, publish -> every output acknowledged, at a fixed offered load.

A paced publisher (the project's Publisher, one per agency, signed by the agencies' keys)
offers ``rate`` signals per second for ``seconds`` seconds to a topic namespace of its own
(prefix ``lat``), where ``processes`` planr router processes in one group route them
(:mod:`benchmarks.routers`, latency mode; the suite uses its N-process router, as ``planr
route --workers N`` runs in ``make run`` and ``compose.yaml``). For each signal, the latency
is the time from its record's ``CreateTime`` (the time of the ``publish_many`` call that was
given the signal: the publisher stamps each record so) to the moment the router had every
output of its batch acknowledged by the broker and its ledger saved (the router's commit
follows). Publisher and router run on this machine, so their clocks are the same.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from benchmarks.routers import Child, collect, migrate_ledger, start
from benchmarks.workload import Workload, by_agency
from planr.signing import ROUTER
from planr.telemetry import Metrics
from planr.topics import Topics, provision
from producers.publisher import Publisher
from scenarios.signals import generate

PREFIX = "lat"


async def _paced(work: Workload, topics: Topics, rate: float, seconds: float, *,
                 ready: Any, processes: int) -> float:
    """Once every router process is ready, publish ``rate * seconds`` signals on schedule;
    returns the achieved rate."""
    scenario = list(generate(int(rate * seconds), seed=11))
    metrics = Metrics(CollectorRegistry())
    agencies = sorted({a for a, _ in scenario}, key=lambda a: a.value)
    pubs = {a: Publisher(conn=work.conn, agency=a, topics=topics, codec=work.setup.codec,
                         metrics=metrics, signer=work.keys.signer(a)) for a in agencies}
    for p in pubs.values():
        await p.start()
    pending: list[asyncio.Task[Any]] = []
    try:
        for _ in range(processes):
            await _ready(ready)
        started, sent = time.perf_counter(), 0
        while sent < len(scenario):
            due = min(len(scenario), int((time.perf_counter() - started) * rate) + 1)
            for agency, signals in by_agency(scenario[sent:due]).items():
                pending.append(asyncio.create_task(pubs[agency].publish_many(signals)))
            sent = due
            await asyncio.sleep(0.002)
        await asyncio.gather(*pending)
        return len(scenario) / (time.perf_counter() - started)
    finally:
        for p in pubs.values():
            await p.stop()


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, round(q * (len(sorted_values) - 1)))
    return sorted_values[index]


async def _ready(ready: Any) -> None:
    await asyncio.get_running_loop().run_in_executor(None, lambda: ready.get(timeout=120))


def measure(work: Workload, tmp: Path, rate: float, seconds: float,
            processes: int = 1, *, fetch_max_wait_ms: int = 500,
            prefix: str = PREFIX) -> dict[str, Any]:
    """p50/p95/p99 latency in milliseconds at ``rate`` signals/s offered for ``seconds``,
    routed by ``processes`` router processes whose consumers let the broker hold an empty
    fetch ``fetch_max_wait_ms`` (``PLANR_FETCH_MAX_WAIT_MS``), in topic namespace
    ``prefix`` (one per measurement)."""
    topics = Topics(prefix)
    asyncio.run(provision(work.conn, topics))
    child = Child(work.conn.bootstrap_servers, prefix, f"{prefix}-router",
                  work.keys.registry_path, work.keys.path(ROUTER), tmp / "lat-ledger",
                  until_idle=5.0, latency=True, fetch_max_wait_ms=fetch_max_wait_ms)
    child.ledger_dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(migrate_ledger(child.ledger_dir))
    procs, results, ready = start(child, processes)

    achieved = asyncio.run(_paced(work, topics, rate, seconds, ready=ready,
                                  processes=processes))
    parts = collect(procs, results)
    values = sorted(v for p in parts for v in p["latencies"])
    return {"offered_per_s": rate, "achieved_per_s": achieved, "signals": len(values),
            "processes": processes, "fetch_max_wait_ms": fetch_max_wait_ms,
            **{f"p{q}_ms": 1000 * _percentile(values, q / 100) for q in (50, 95, 99)},
            "max_ms": 1000 * (values[-1] if values else 0.0),
            "method": "record CreateTime (the publisher's call) -> batch outputs acked"}
