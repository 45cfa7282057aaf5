"""``planr run --demo``: the whole bus on the embedded broker, with a generated scenario.

Every record is signed as in production. With the embedded broker, the demo generates a
throw-away key for each publishing agency and each service into a fresh temporary directory
(mode 0700) with its own registry, and deletes it at the end. With a configured broker
(``PLANR_BOOTSTRAP_SERVERS``), it uses the registry ``PLANR_KEY_REGISTRY`` and, for each
owner, the newest registered key valid now whose private key file is in the directory of
``PLANR_SIGNING_KEY`` (default ``PLANR_DATA_DIR/keys``, where ``planr keys generate`` writes).

The router runs as ``planr route --workers N`` does (``--workers``, default 2): N processes in
one consumer group, started with this demo's broker, topic prefix, key registry, router key
and ledger (whose schema this process creates first). Once the group has committed every
record of its input topics, the workers are told to drain and stop; each reports its
statistics, and the summary shows their sum and each worker's share.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shutil
import signal
import tempfile
import time
from collections import Counter
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Annotated

import typer
from aiokafka import TopicPartition

from cli.context import Context, Store, fail, get
from cli.jibdemo import Figures, print_jib_summary, start_jib_demo
from cli.keys import keys_in_dir
from cli.workers import (
    WorkerRun,
    check_partitions,
    child_env,
    ingress_partitions,
    run_workers,
)
from consumers.jib.panels import DEFAULT_PANELS_FILE
from consumers.metrics import default_store_metrics
from consumers.ntf.aggregator import NtfAggregator
from consumers.outbox import Outbox
from consumers.store import Database, sqlite_url
from consumers.supervisor import StoreServices, start_store_services
from planr.broker import EmbeddedBroker
from planr.domain import Agency
from planr.errors import PlanrError, UsageError
from planr.kafka import KafkaConnection, make_consumer, make_producer
from planr.signing import AGGREGATOR, INBOXES, PROJECTOR, ROUTER, SERVICE_OWNERS, sign_headers
from planr.telemetry import default_metrics
from planr.topics import Topics, provision
from producers.publisher import Publisher
from routing.setup import RoutingSetup, prepare
from scenarios.keys import KeyRing, throwaway_keys
from scenarios.signals import generate
from schemas.models import SignalIn

#: Records no agency would send: they must end in the dead-letter topic.
MALFORMED = (b"not avro", b"\xc3\x01" + b"\x00" * 8 + b"junk")
#: The router workers' consumer group (the router's own default).
ROUTER_GROUP = "planr-router"


def register(app: typer.Typer) -> None:
    app.command("run")(run)


def run(
    ctx: typer.Context,
    demo: Annotated[bool, typer.Option("--demo", help="Publish a generated scenario.")] = False,
    signals: Annotated[int, typer.Option(envvar="PLANR_DEMO_SIGNALS", min=1)] = 3000,
    seed: Annotated[int, typer.Option(envvar="PLANR_DEMO_SEED")] = 2015,
    workers: Annotated[int, typer.Option(
        envvar="PLANR_DEMO_WORKERS", min=1, max=64,
        help="Router processes in the group, as 'planr route --workers N'.")] = 2,
) -> None:
    """Run the bus: broker (embedded unless PLANR_BOOTSTRAP_SERVERS), topics, router,
    projector, inboxes, NTF aggregator; with --demo, publish a scenario, wait until it is
    routed, print a summary."""
    c = get(ctx)
    if not demo:
        fail("only 'planr run --demo' exists yet; run the services with 'planr route'", 2)
    try:
        setup = prepare(c.settings.policy)
    except UsageError as exc:
        fail(str(exc), 2)
    try:
        routed, published, jib = asyncio.run(_demo(c, setup, signals, seed, workers))
    except UsageError as exc:
        fail(str(exc), 2)
    except PlanrError as exc:
        fail(f"demo failed: {exc}")
    _summary(routed, published, len(MALFORMED))
    try:
        print_jib_summary(jib)
    except PlanrError as exc:
        fail(str(exc))


async def _connect(c: Context, stack: AsyncExitStack) -> KafkaConnection:
    """The configured broker, or an embedded one that lives as long as ``stack``."""
    bootstrap = c.settings.bootstrap_servers
    if bootstrap is not None:
        return c.connection(bootstrap)
    broker = await stack.enter_async_context(EmbeddedBroker())
    typer.echo(f"embedded broker: {broker.bootstrap_servers}", err=True)
    # Tansu finishes a group join after half the session timeout: at most 6 s on the demo broker
    timeout = min(c.settings.session_timeout_ms, 6_000)
    return dataclasses.replace(c.connection(broker.bootstrap_servers), session_timeout_ms=timeout)


async def _store(c: Context, stack: AsyncExitStack, store: Store) -> Database:
    """The configured store; with the embedded broker (which forgets everything between
    runs), a fresh demo database (``demo-ftf.db``, ``demo-inboxes.db``)."""
    db = c.database(store)
    if c.settings.bootstrap_servers is None and db.url.startswith("sqlite"):
        name = f"demo-{store}.db"
        path = c.settings.data_dir / name
        for stale in (path, path.with_name(f"{name}-wal"), path.with_name(f"{name}-shm")):
            stale.unlink(missing_ok=True)
        db = Database(sqlite_url(c.settings.data_dir, name))
    return await stack.enter_async_context(db)


def _keys(c: Context, stack: AsyncExitStack, owners: list[str]) -> KeyRing:
    """Throw-away keys with the embedded broker; else the configured ones (module doc)."""
    if c.settings.bootstrap_servers is not None:
        key_dir = (c.settings.signing_key.parent if c.settings.signing_key is not None
                   else c.settings.data_dir / "keys")
        return keys_in_dir(c.key_registry_path, key_dir, owners)
    tmp = tempfile.mkdtemp(prefix="planr-demo-keys-")  # mode 0700
    stack.callback(shutil.rmtree, tmp, ignore_errors=True)
    return throwaway_keys(Path(tmp) / "keys", owners)


async def _publish(conn: KafkaConnection, topics: Topics, setup: RoutingSetup,
                   scenario: list[tuple[Agency, SignalIn]], keys: KeyRing) -> Counter[str]:
    by_agency: dict[Agency, list[SignalIn]] = {}
    for agency, s in scenario:
        by_agency.setdefault(agency, []).append(s)
    published: Counter[str] = Counter()
    for agency, batch in by_agency.items():
        async with Publisher(conn=conn, agency=agency, topics=topics, codec=setup.codec,
                             metrics=default_metrics(), signer=keys.signer(agency)) as pub:
            published[agency.value] += len(await pub.publish_many(batch))
        typer.echo(f"published {sum(published.values())}/{len(scenario)} signals", err=True)
    raw = make_producer(conn)
    await raw.start()
    try:  # malformed, but signed by the agency: they pass the signature check
        topic = topics.ingress(Agency.VSSE)
        for value in MALFORMED:
            await raw.send_and_wait(topic, value=value,
                                    headers=sign_headers(keys.signer(Agency.VSSE), topic, value))
    finally:
        await raw.stop()
    return published


async def _wait_routed(conn: KafkaConnection, topics: Topics, group: str,
                       routing: asyncio.Task[WorkerRun]) -> None:
    """Until ``group`` has committed every record now in the router's input topics (each
    worker commits a batch once its outputs are acknowledged)."""
    watcher = make_consumer(conn, group_id=group)  # reads the group's offsets, never joins
    await watcher.start()
    try:
        await watcher.topics()
        tps = [TopicPartition(t, p) for t in [*topics.all_ingress(), topics.ftf_removals]
               for p in sorted(watcher.partitions_for_topic(t) or ())]
        ends = await _ends(conn, tps)
        deadline, last = time.monotonic() + 300, -1
        while True:
            routed = 0
            for tp in tps:
                routed += min(await watcher.committed(tp) or 0, ends[tp])
            if routed != last:
                last = routed
                typer.echo(f"routed {routed}/{sum(ends.values())} records", err=True)
            if routed == sum(ends.values()):
                return
            if routing.done():
                routing.result()
                raise PlanrError("the router workers stopped before the scenario was routed")
            if time.monotonic() > deadline:
                raise PlanrError("routing did not finish within 300 s")
            await asyncio.sleep(0.5)
    finally:
        await watcher.stop()


async def _ends(conn: KafkaConnection, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
    """The end of each partition: the high watermark a fetch response carries (Tansu's
    ListOffsets falls short, see consumers.reader)."""
    probe = make_consumer(conn, group_id=None, max_records=1)
    await probe.start()
    try:
        probe.assign(tps)
        await probe.seek_to_beginning(*tps)
        deadline = time.monotonic() + 60
        while (missing := [tp for tp in tps if probe.highwater(tp) is None]):
            if time.monotonic() > deadline:
                raise PlanrError(f"no end of partition {missing[0].topic}/"
                                 f"{missing[0].partition} in sight")
            await probe.getmany(*missing, timeout_ms=200)
        return {tp: probe.highwater(tp) or 0 for tp in tps}
    finally:
        await probe.stop()


def _worker_envs(c: Context, conn: KafkaConnection, keys: KeyRing, ledger: str,
                 workers: int) -> list[dict[str, str]]:
    """What the in-process router had: this broker, topic prefix, registry, router key and
    ledger; metrics (when served) on the ports after the demo's own."""
    envs = []
    for i in range(workers):
        env = child_env(c, i)
        env.update({"PLANR_BOOTSTRAP_SERVERS": conn.bootstrap_servers,
                    "PLANR_SESSION_TIMEOUT_MS": str(conn.session_timeout_ms),
                    "PLANR_TOPIC_PREFIX": c.topics.prefix,
                    "PLANR_KEY_REGISTRY": str(keys.registry_path),
                    "PLANR_SIGNING_KEY": str(keys.path(ROUTER)),
                    "PLANR_LEDGER_DB_URL": ledger})
        port = c.settings.metrics_port
        if port is not None:  # 0: any free port, for each
            env["PLANR_METRICS_PORT"] = str(port + 1 + i if port else 0)
        envs.append(env)
    return envs


async def _start_routing(c: Context, stack: AsyncExitStack, conn: KafkaConnection,
                         keys: KeyRing, workers: int
                         ) -> tuple[asyncio.Event, asyncio.Task[WorkerRun]]:
    """The router workers, told to drain on ``stop`` (set by SIGTERM/SIGINT too, and when
    ``stack`` unwinds)."""
    if c.settings.metrics_port is not None and c.settings.metrics_port + workers > 65535:
        raise UsageError(f"--workers {workers}: metrics ports from "
                         f"{c.settings.metrics_port + 1} exceed 65535")
    check_partitions(await ingress_partitions(conn, c.topics), workers)  # before publishing
    ledger = await _store(c, stack, "ledger")  # its schema, once, before the workers start
    stop = asyncio.Event()
    routing = asyncio.create_task(run_workers(
        conn, c.topics, _worker_envs(c, conn, keys, ledger.url, workers), ROUTER_GROUP,
        stop=stop))
    loop = asyncio.get_running_loop()
    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, stop.set)
    stack.push_async_callback(_stop_routing, stop, routing)
    return stop, routing


async def _stop_routing(stop: asyncio.Event, routing: asyncio.Task[WorkerRun]) -> None:
    stop.set()
    with contextlib.suppress(PlanrError):
        await routing


def _finished(run: WorkerRun) -> WorkerRun:
    """``run``, if every worker exited 0 and reported its statistics."""
    if run.status != 0:
        raise PlanrError(f"a router worker failed (exit status {run.status})")
    for i, stats in enumerate(run.stats, start=1):
        if stats is None:
            raise PlanrError(f"router worker {i} reported no statistics")
    return run


async def _drain(store: StoreServices) -> None:
    """Let the store services catch up, then stop them, each after its batch in flight."""
    await store.finish()
    for s in store.services:
        typer.echo(f"{s.name}: {s.stats.records} records stored, "
                   f"{s.stats.duplicates} duplicates skipped", err=True)


async def _count_ntf(c: Context, stack: AsyncExitStack, conn: KafkaConnection,
                     setup: RoutingSetup, *, expected: int, keys: KeyRing) -> None:
    """The NTF aggregator, started once the scenario is routed: the history arrives at once,
    and a month is final once published. It counts every fact, then publishes the months
    closed on today's clock."""
    metrics = default_store_metrics()
    db = await _store(c, stack, "ntf")
    outbox = await stack.enter_async_context(Outbox(conn=conn, topics=c.topics, metrics=metrics,
                                                    signer=keys.signer(AGGREGATOR)))
    agg = await stack.enter_async_context(NtfAggregator(
        conn=conn, db=db, topics=c.topics, codec=setup.codec, metrics=metrics,
        registry=keys.registry,
        threshold=setup.policy.ntf_threshold, policy_version=setup.policy.version,
        outbox=outbox, interval=1.0))
    counting = asyncio.create_task(agg.run())
    deadline = time.monotonic() + 60
    while agg.facts < expected:
        if counting.done() or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    agg.request_stop()
    await counting
    await agg.publish_closed()
    await outbox.flush(db)
    typer.echo(f"{agg.name}: {agg.facts} facts counted, {len(agg.published)} closed "
               "month(s) published", err=True)


async def _demo(c: Context, setup: RoutingSetup, n: int, seed: int,
                workers: int) -> tuple[WorkerRun, Counter[str], Figures]:
    c.serve_metrics()
    scenario = list(generate(n, seed=seed))
    owners = sorted({a.value for a, _ in scenario} | {Agency.VSSE.value}) + list(SERVICE_OWNERS)
    async with AsyncExitStack() as stack:  # stops everything in reverse order
        keys = _keys(c, stack, owners)
        conn = await _connect(c, stack)
        topics = c.topics
        typer.echo(f"topics: {len(await provision(conn, topics))} created", err=True)
        stop, routing = await _start_routing(c, stack, conn, keys, workers)
        store = await start_store_services(
            stack, conn=conn, topics=topics, ftf_db=await _store(c, stack, "ftf"),
            inbox_db=await _store(c, stack, "inboxes"), codec=setup.codec,
            access=c.access_config(), metrics=default_store_metrics(), registry=keys.registry,
            projector_signer=keys.signer(PROJECTOR), inboxes_signer=keys.signer(INBOXES),
            check_process=c.settings.check_process)
        jib = await start_jib_demo(
            stack, conn=conn, topics=topics, db=await _store(c, stack, "jib"),
            policy=setup.policy, panels_file=DEFAULT_PANELS_FILE, codec=setup.codec,
            metrics=default_store_metrics())
        published = await _publish(conn, topics, setup, scenario, keys)
        await _wait_routed(conn, topics, ROUTER_GROUP, routing)
        stop.set()  # every worker drains, reports and exits
        await _drain(store)
        routed = _finished(await routing)
        await _count_ntf(c, stack, conn, setup, keys=keys,
                         expected=routed.total.ntf_facts)
        return routed, published, await jib.finish()


def _summary(routed: WorkerRun, published: Counter[str], bad: int) -> None:
    stats = routed.total
    typer.echo("")
    typer.echo("planr-bus demo summary")
    typer.echo("=" * 52)
    typer.echo(f"{'signals in':<36}{sum(published.values()):>16}")
    for agency, count in sorted(published.items()):
        typer.echo(f"  {agency:<34}{count:>16}")
    typer.echo(f"{'signals routed':<36}{stats.signals:>16}")
    typer.echo(f"{'router workers':<36}{len(routed.stats):>16}")
    for i, part in enumerate(routed.stats, start=1):
        typer.echo(f"  {'signals routed by worker ' + str(i):<34}"
                   f"{part.signals if part is not None else 0:>16}")
    typer.echo(f"{'routing decisions audited':<36}{stats.audits:>16}")
    typer.echo("deliveries per recipient")
    csilr = {r: n for r, n in stats.deliveries.items() if r.startswith("csilr:")}
    for rid, count in sorted(stats.deliveries.items()):
        if not rid.startswith("csilr:"):
            typer.echo(f"  {rid:<34}{count:>16}")
    typer.echo(f"  {'csilr:* (' + str(len(csilr)) + ' communes)':<34}{sum(csilr.values()):>16}")
    typer.echo("denials per recipient class")
    for cls_, count in sorted(stats.denials.items()):
        typer.echo(f"  {cls_:<34}{count:>16}")
    typer.echo(f"{'dead letters':<36}{sum(stats.dead_letters.values()):>16}")
    for reason, count in sorted(stats.dead_letters.items()):
        typer.echo(f"  {reason:<34}{count:>16}")
    if sum(stats.dead_letters.values()) != bad:
        fail(f"expected {bad} dead letters, got {sum(stats.dead_letters.values())}")
