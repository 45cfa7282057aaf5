"""``planr run --demo``: the whole bus on the embedded broker, with a generated scenario."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import time
from collections import Counter
from contextlib import AsyncExitStack
from typing import Annotated

import typer

from planr.broker import EmbeddedBroker
from planr.cli import ftf
from planr.cli.context import Context, fail, get
from planr.domain import Agency
from planr.errors import PlanrError, UsageError
from planr.kafka import make_producer
from planr.telemetry import default_metrics
from planr.topics import provision
from producers.publisher import Publisher
from producers.scenario import generate
from routing.aggregator import Aggregator
from routing.router import Router, RouterStats, drain_on
from routing.setup import prepare


def register(app: typer.Typer) -> None:
    app.command("run")(run)


def run(
    ctx: typer.Context,
    demo: Annotated[bool, typer.Option("--demo", help="Publish a generated scenario.")] = False,
    signals: Annotated[int, typer.Option(envvar="PLANR_DEMO_SIGNALS", min=1)] = 3000,
    seed: Annotated[int, typer.Option(envvar="PLANR_DEMO_SEED")] = 2015,
) -> None:
    """Run the bus: broker (embedded unless PLANR_BOOTSTRAP_SERVERS), topics, router, NTF
    aggregator; with --demo, publish a scenario, wait until it is routed, print a summary."""
    c = get(ctx)
    if not demo:
        fail("only 'planr run --demo' exists yet; run the services with 'planr route'", 2)
    try:
        setup = prepare(c.settings.policy)
    except UsageError as exc:
        fail(str(exc), 2)
    try:
        stats, published, bad = asyncio.run(_demo(c, setup, signals, seed))
    except PlanrError as exc:
        fail(f"demo failed: {exc}")
    _summary(stats, published, bad)


async def _demo(c: Context, setup, n: int, seed: int):  # type: ignore[no-untyped-def]  # noqa: ANN001, ANN202, PLR0915 - one linear script
    metrics = default_metrics()
    c.serve_metrics()
    async with AsyncExitStack() as stack:
        bootstrap = c.settings.bootstrap_servers
        if bootstrap is None:
            broker = EmbeddedBroker()
            await stack.enter_async_context(broker)
            bootstrap = broker.bootstrap_servers
            typer.echo(f"embedded broker: {bootstrap}", err=True)
        conn = c.connection(bootstrap)
        if c.settings.bootstrap_servers is None:
            conn = dataclasses.replace(conn, session_timeout_ms=6_000)
        topics = c.topics
        created = await provision(conn, topics)
        typer.echo(f"topics: {len(created)} created", err=True)
        router = Router(conn=conn, topics=topics, engine=setup.engine, views=setup.views,
                        codec=setup.codec, metrics=metrics)
        aggregator = Aggregator(conn=conn, topics=topics, codec=setup.codec, metrics=metrics,
                                interval=1.0)
        await stack.enter_async_context(router)
        await stack.enter_async_context(aggregator)
        await drain_on(router, signal.SIGTERM, signal.SIGINT)
        route_task = asyncio.create_task(router.run())
        agg_task = asyncio.create_task(aggregator.run())
        store = await ftf.start_services(c, conn, stack, fresh=c.settings.bootstrap_servers is None)

        by_agency: dict[Agency, list] = {}  # type: ignore[type-arg]
        for agency, s in generate(n, seed=seed):
            by_agency.setdefault(agency, []).append(s)
        published: Counter[str] = Counter()
        for agency, batch in by_agency.items():
            async with Publisher(conn=conn, agency=agency, topics=topics, codec=setup.codec,
                                 metrics=metrics) as pub:
                ids = await pub.publish_many(batch)
            published[agency.value] += len(ids)
            typer.echo(f"published {sum(published.values())}/{n} signals", err=True)
        # A few records that no agency would send: they must end in the dead-letter topic.
        raw = make_producer(conn)
        await raw.start()
        try:
            bad = [b"not avro", b"\xc3\x01" + b"\x00" * 8 + b"junk"]
            for value in bad:
                await raw.send_and_wait(topics.ingress(Agency.VSSE), value=value)
        finally:
            await raw.stop()
        expected = n + len(bad)
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
        # let the aggregator count every fact the router wrote, then stop both
        deadline = time.monotonic() + 60
        while aggregator.facts < router.stats.deliveries.get("ntf", 0):
            if agg_task.done() or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        await store.finish()
        router.request_stop()
        aggregator.request_stop()
        await route_task
        with contextlib.suppress(asyncio.CancelledError):
            await agg_task
        return router.stats, published, len(bad)


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
