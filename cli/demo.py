"""``planr run --demo``: the whole bus on the embedded broker, with a generated scenario.

Every record is signed as in production. With the embedded broker, the demo generates a
throw-away key for each publishing agency and each service into a fresh temporary directory
(mode 0700) with its own registry, and deletes it at the end. With a configured broker
(``PLANR_BOOTSTRAP_SERVERS``), it uses the registry ``PLANR_KEY_REGISTRY`` and, for each
owner, the newest registered key valid now whose private key file is in the directory of
``PLANR_SIGNING_KEY`` (default ``PLANR_DATA_DIR/keys``, where ``planr keys generate`` writes).
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import tempfile
import time
from collections import Counter
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Annotated

import typer

from cli.context import Context, Store, fail, get
from cli.jibdemo import Figures, print_jib_summary, start_jib_demo
from cli.keys import keys_in_dir
from consumers.jib.panels import DEFAULT_PANELS_FILE
from consumers.ledger import StoreLedger
from consumers.metrics import default_store_metrics
from consumers.ntf.aggregator import NtfAggregator
from consumers.outbox import Outbox
from consumers.store import Database, sqlite_url
from consumers.supervisor import StoreServices, start_store_services
from planr.broker import EmbeddedBroker
from planr.domain import Agency
from planr.errors import PlanrError, UsageError
from planr.kafka import KafkaConnection, make_producer
from planr.loop import drain_on_signals
from planr.signing import AGGREGATOR, INBOXES, PROJECTOR, ROUTER, SERVICE_OWNERS, sign_headers
from planr.telemetry import default_metrics
from planr.topics import Topics, provision
from producers.publisher import Publisher
from routing.router import Router, RouterStats
from routing.setup import RoutingSetup, prepare
from scenarios.keys import KeyRing, throwaway_keys
from scenarios.signals import generate
from schemas.models import SignalIn

#: Records no agency would send: they must end in the dead-letter topic.
MALFORMED = (b"not avro", b"\xc3\x01" + b"\x00" * 8 + b"junk")


def register(app: typer.Typer) -> None:
    app.command("run")(run)


def run(
    ctx: typer.Context,
    demo: Annotated[bool, typer.Option("--demo", help="Publish a generated scenario.")] = False,
    signals: Annotated[int, typer.Option(envvar="PLANR_DEMO_SIGNALS", min=1)] = 3000,
    seed: Annotated[int, typer.Option(envvar="PLANR_DEMO_SEED")] = 2015,
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
        stats, published, jib = asyncio.run(_demo(c, setup, signals, seed))
    except PlanrError as exc:
        fail(f"demo failed: {exc}")
    _summary(stats, published, len(MALFORMED))
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


async def _wait_routed(router: Router, route_task: asyncio.Task[RouterStats],
                       expected: int) -> None:
    deadline = time.monotonic() + 300
    last = -1
    while router.stats.records < expected:
        if route_task.done():
            route_task.result()
            raise PlanrError("the router stopped before the scenario was routed")
        if time.monotonic() > deadline:
            raise PlanrError("routing did not finish within 300 s")
        if router.stats.records != last:
            last = router.stats.records
            typer.echo(f"routed {last}/{expected} records", err=True)
        await asyncio.sleep(0.5)
    typer.echo(f"routed {router.stats.records}/{expected} records", err=True)


async def _drain(router: Router, store: StoreServices, routing: asyncio.Task[RouterStats]
                 ) -> None:
    """Let the store services catch up, then stop them and the router, each after its batch
    in flight."""
    await store.finish()
    for s in store.services:
        typer.echo(f"{s.name}: {s.stats.records} records stored, "
                   f"{s.stats.duplicates} duplicates skipped", err=True)
    router.request_stop()
    await routing


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


async def _demo(c: Context, setup: RoutingSetup, n: int,
                seed: int) -> tuple[RouterStats, Counter[str], Figures]:
    c.serve_metrics()
    metrics = default_metrics()
    scenario = list(generate(n, seed=seed))
    owners = sorted({a.value for a, _ in scenario} | {Agency.VSSE.value}) + list(SERVICE_OWNERS)
    async with AsyncExitStack() as stack:  # stops everything in reverse order
        keys = _keys(c, stack, owners)
        conn = await _connect(c, stack)
        topics = c.topics
        typer.echo(f"topics: {len(await provision(conn, topics))} created", err=True)
        router = await stack.enter_async_context(Router(
            conn=conn, topics=topics, engine=setup.engine, views=setup.views,
            codec=setup.codec, metrics=metrics, registry=keys.registry,
            signer=keys.signer(ROUTER), ledger=StoreLedger(await _store(c, stack, "ledger"))))
        drain_on_signals(router)
        routing = asyncio.create_task(router.run())
        store = await start_store_services(
            stack, conn=conn, topics=topics, ftf_db=await _store(c, stack, "ftf"),
            inbox_db=await _store(c, stack, "inboxes"), codec=setup.codec,
            access=c.access_config(), metrics=default_store_metrics(), registry=keys.registry,
            projector_signer=keys.signer(PROJECTOR), inboxes_signer=keys.signer(INBOXES))
        jib = await start_jib_demo(
            stack, conn=conn, topics=topics, db=await _store(c, stack, "jib"),
            policy=setup.policy, panels_file=DEFAULT_PANELS_FILE, codec=setup.codec,
            metrics=default_store_metrics())
        published = await _publish(conn, topics, setup, scenario, keys)
        await _wait_routed(router, routing, n + len(MALFORMED))
        await _drain(router, store, routing)
        await _count_ntf(c, stack, conn, setup, expected=router.stats.deliveries.get("ntf", 0),
                         keys=keys)
        return router.stats, published, await jib.finish()


def _summary(stats: RouterStats, published: Counter[str], bad: int) -> None:
    typer.echo("")
    typer.echo("planr-bus demo summary")
    typer.echo("=" * 52)
    typer.echo(f"{'signals in':<36}{sum(published.values()):>16}")
    for agency, count in sorted(published.items()):
        typer.echo(f"  {agency:<34}{count:>16}")
    typer.echo(f"{'signals routed':<36}{stats.signals:>16}")
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
