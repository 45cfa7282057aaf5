"""The planr router, measured: N processes (``multiprocessing`` spawn) in one consumer group,
each running :class:`routing.router.Router` with the shipped policy, audit, views and a ledger
(one SQLite ledger shared by the processes, as ``planr route --workers N`` shares
``PLANR_LEDGER_DB_URL``), exactly as ``planr route`` builds it.

Each process records when its first batch started and, after every commit, the time and the
signals routed so far; the throughput is measured over the window in which every process was
routing (from the last process's first batch to the last commit), so that group joins and
process start-up are left out, alike for 1 and N processes. Latency mode records, for every
input record, the time from its ``CreateTime`` (the time of the publisher's call that was
given it) to the moment every output of its batch was acknowledged and the ledger saved.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import pickle
import queue
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from benchmarks.workload import Output, warm
from consumers.ledger import StoreLedger
from consumers.store import Database, sqlite_url
from planr.kafka import KafkaConnection
from planr.loop import Batch
from planr.signing import ROUTER, KeyRegistry, Signer
from planr.telemetry import Metrics, configure_logging
from planr.topics import Topics
from routing import DEFAULT_POLICY
from routing.router import Router
from routing.setup import prepare


@dataclass(frozen=True)
class Child:
    """What one router process needs (picklable)."""

    bootstrap: str
    prefix: str
    group: str
    registry: Path
    key: Path
    ledger_dir: Path
    until_idle: float
    latency: bool = False
    #: PLANR_FETCH_MAX_WAIT_MS of the process (Tansu holds an empty fetch this long)
    fetch_max_wait_ms: int = 500
    #: write every output record sent, (topic, partition, key, value, headers), here (pickle)
    capture: Path | None = None


class _Capturing:
    """A record-batch builder that remembers what was appended to it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.items: list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]] = []

    def append(self, *, key: bytes | None, value: bytes, timestamp: int | None,
               headers: list[tuple[str, bytes]]) -> Any:
        meta = self.inner.append(key=key, value=value, timestamp=timestamp, headers=headers)
        if meta is not None:
            self.items.append((key, value, headers))
        return meta

    def record_count(self) -> int:
        return int(self.inner.record_count())


class TimedRouter(Router):
    """The router, with a stopwatch around each batch (no change to what it does)."""

    def __init__(self, *, latency: bool, ready: Any, capture: bool, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.outputs = 0
        self.captured: list[Output] | None = [] if capture else None
        self.first: float | None = None
        self.marks: list[tuple[float, int]] = []
        self.latencies: list[float] | None = [] if latency else None
        self.cpu = 0.0  # process CPU seconds spent handling batches (robust to a busy machine)
        self._ready_queue = ready

    async def _open(self) -> None:
        await super()._open()
        await warm(self._producer, [t for t in self._topics.everything()
                                    if t not in self._inputs])
        self._count_outputs(self._producer)

    def _count_outputs(self, producer: Any) -> None:
        """Count every record sent (per batch: no cost per record); capture them if asked."""
        send_batch, create_batch = producer.send_batch, producer.create_batch

        async def counted(batch: Any, topic: str, *, partition: int) -> Any:
            self.outputs += batch.record_count()
            if isinstance(batch, _Capturing):
                assert self.captured is not None
                self.captured.extend((topic, partition, k, v, h) for k, v, h in batch.items)
                batch = batch.inner
            return await send_batch(batch, topic, partition=partition)

        producer.send_batch = counted
        if self.captured is not None:
            producer.create_batch = lambda: _Capturing(create_batch())

    async def _handle(self, batch: Batch) -> None:
        if self.first is None:
            self.first = time.time()
        cpu = time.process_time()
        await super()._handle(batch)
        self.cpu += time.process_time() - cpu
        if self.latencies is not None:
            acked = time.time()
            self.latencies.extend(acked - rec.timestamp / 1000
                                  for recs in batch.values() for rec in recs)

    async def _commit(self, batch: Batch) -> None:
        await super()._commit(batch)
        self.marks.append((time.time(), self.stats.signals))

    async def _tick(self) -> None:
        if self._ready_queue is not None and self._ready():
            self._ready_queue.put("ready")
            self._ready_queue = None


async def _route(child: Child, ready: Any) -> dict[str, Any]:
    setup = prepare(DEFAULT_POLICY)
    registry = KeyRegistry.load(child.registry)
    # the shipped default (PLANR_SESSION_TIMEOUT_MS): a long batch on a busy machine must not
    # get a worker expelled from the group mid-batch
    conn = KafkaConnection(child.bootstrap, session_timeout_ms=10_000,
                           fetch_max_wait_ms=child.fetch_max_wait_ms)
    async with Database(sqlite_url(child.ledger_dir, "ledger.db")) as db:
        router = TimedRouter(latency=child.latency, ready=ready,
                             capture=child.capture is not None, conn=conn,
                             topics=Topics(child.prefix), engine=setup.engine,
                             views=setup.views, codec=setup.codec,
                             metrics=Metrics(CollectorRegistry()), registry=registry,
                             signer=Signer.from_file(child.key, owner=ROUTER),
                             group_id=child.group, ledger=StoreLedger(db))
        async with router:
            stats = await router.run(until_idle=child.until_idle)
    if child.capture is not None:
        child.capture.write_bytes(pickle.dumps(router.captured))
    return {"first": router.first, "marks": router.marks, "signals": stats.signals,
            "records": stats.records, "latencies": router.latencies or [],
            "outputs": router.outputs, "cpu": router.cpu}


def child_main(child: Child, results: Any, ready: Any) -> None:  # pragma: no cover - a child
    configure_logging("console", "warning")
    results.put(asyncio.run(_route(child, ready)))


async def migrate_ledger(ledger_dir: Path) -> None:
    """Create the shared ledger once, before the processes start (one schema upgrade)."""
    async with Database(sqlite_url(ledger_dir, "ledger.db")):
        pass


def start(child: Child, processes: int) -> tuple[list[Any], Any, Any]:
    """Start ``processes`` router processes; returns them, the results and ready queues."""
    ctx = multiprocessing.get_context("spawn")
    results, ready = ctx.Queue(), ctx.Queue()
    procs = [ctx.Process(target=child_main, args=(child, results, ready), daemon=True)
             for _ in range(processes)]
    for p in procs:
        p.start()
    return procs, results, ready


def collect(procs: list[Any], results: Any, timeout: float = 900.0) -> list[dict[str, Any]]:
    """Every process's result (raises if one died without one)."""
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(out) < len(procs):
        try:
            out.append(results.get(timeout=1.0))
        except queue.Empty:
            if time.monotonic() > deadline or (
                    all(not p.is_alive() for p in procs) and results.empty()):
                raise RuntimeError("a router process ended without a result") from None
    for p in procs:
        p.join(timeout=30)
    return out


def window(parts: list[dict[str, Any]]) -> tuple[int, float]:
    """Signals routed, and seconds, while every process was routing (see module doc)."""
    started = [p["first"] for p in parts if p["first"] is not None]
    ends = [p["marks"][-1][0] for p in parts if p["marks"]]
    total = sum(int(p["signals"]) for p in parts)
    if not ends:
        return total, 0.0
    t0 = max(started)
    inside = 0
    for p in parts:
        before = max((n for t, n in p["marks"] if t <= t0), default=0)
        inside += int(p["signals"]) - before
    if inside < total // 2 or len(started) < len(parts):  # one process did (nearly) it all
        return total, max(ends) - min(started)
    return inside, max(ends) - t0


def route(child: Child, processes: int) -> tuple[int, float, int, int]:
    """Run ``processes`` routers over the input; (signals in window, seconds, signals,
    output records)."""
    child.ledger_dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(migrate_ledger(child.ledger_dir))
    procs, results, _ready = start(child, processes)
    parts = collect(procs, results)
    inside, seconds = window(parts)
    return (inside, seconds, sum(int(p["signals"]) for p in parts),
            sum(int(p["outputs"]) for p in parts))
