"""The long-running services: ``planr route``, ``planr aggregate``, ``planr inboxes`` (and
the projector, ``planr ftf project``). Each drains its batch in flight on SIGTERM or SIGINT,
then stops."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer

from cli.context import Context, fail, get, run_async
from cli.workers import describe, stats_to_json, supervise
from consumers.inboxes import INBOX_CLASSES, InboxService
from consumers.ledger import StoreLedger
from consumers.metrics import default_store_metrics
from consumers.ntf.aggregator import DEFAULT_GRACE, NtfAggregator
from consumers.outbox import DEAD_LETTER_KIND, Outbox
from consumers.store import Database
from consumers.tracked import TrackedConsumer
from planr.domain import Recipient
from planr.errors import PlanrError, UsageError
from planr.loop import drain_on_signals
from planr.signing import AGGREGATOR, INBOXES, ROUTER
from planr.telemetry import default_metrics
from routing.router import Router
from routing.setup import RoutingSetup, prepare
from schemas.codec import Codec

UntilIdle = Annotated[
    float | None, typer.Option(help="Exit after this many seconds without input.", min=0.1)
]


def register(app: typer.Typer) -> None:
    app.command("route")(route)
    app.command("aggregate")(aggregate)
    app.command("inboxes")(inboxes)


def routing_setup(c: Context) -> RoutingSetup:
    try:
        return prepare(c.settings.policy)
    except UsageError as exc:
        fail(str(exc), code=2)


def route(
    ctx: typer.Context,
    until_idle: UntilIdle = None,
    group: Annotated[
        str, typer.Option(envvar="PLANR_ROUTER_GROUP", help="Consumer group id.")
    ] = "planr-router",
    workers: Annotated[
        int, typer.Option(envvar="PLANR_ROUTER_WORKERS", min=1, max=64,
                          help="Router processes in the group (metrics port + i each).")
    ] = 1,
    as_json: Annotated[
        bool, typer.Option("--json", help="At exit, the statistics as one JSON line on stdout.")
    ] = False,
) -> None:
    """Run the routing consumer over every ingress topic."""
    c = get(ctx)
    conn = c.connection()
    setup = routing_setup(c)
    registry = c.key_registry()
    signer = c.signer(ROUTER, registry)
    if workers > 1:
        c.with_db("ledger", _schema_ready)  # one schema upgrade, before the workers start
        raise typer.Exit(supervise(c, workers, group, until_idle, as_json=as_json))
    c.serve_metrics()

    async def go() -> None:
        async with c.database("ledger") as db, Router(
                conn=conn, topics=c.topics, engine=setup.engine, views=setup.views,
                codec=setup.codec, metrics=default_metrics(), registry=registry,
                signer=signer, group_id=group, ledger=StoreLedger(db)) as r:
            drain_on_signals(r)
            stats = await r.run(until_idle=until_idle)
        typer.echo(f"routed: {describe(stats)}", err=True)
        if as_json:  # how a worker reports to the parent of 'planr route --workers N'
            typer.echo(stats_to_json(stats))

    try:
        run_async(go())
    except PlanrError as exc:
        fail(f"router stopped: {exc}")


async def _schema_ready(db: Database) -> None:
    """Nothing: opening the store upgraded its schema."""


def aggregate(
    ctx: typer.Context,
    until_idle: UntilIdle = None,
    interval: Annotated[
        float, typer.Option(envvar="PLANR_NTF_INTERVAL", min=0.1,
                            help="Seconds between checks for closed months when idle.")
    ] = 60.0,
    grace_days: Annotated[
        int, typer.Option(envvar="PLANR_NTF_GRACE_DAYS", min=0,
                          help="Days after a month's end before it is published.")
    ] = DEFAULT_GRACE.days,
    at: Annotated[
        datetime | None, typer.Option(help="A fixed clock for closing months (default: now, UTC).")
    ] = None,
) -> None:
    """Run the National Taskforce aggregator: counts every NtfFact once into its store and
    publishes each closed month's table, small counts suppressed (threshold in the policy)."""
    c = get(ctx)
    conn = c.connection()
    registry = c.key_registry()
    signer = c.signer(AGGREGATOR, registry)
    policy = routing_setup(c).policy
    clock = _utcnow if at is None else _fixed(at)
    c.serve_metrics()
    metrics = default_store_metrics()

    async def work(db: Database) -> None:
        outbox = Outbox(conn=conn, topics=c.topics, metrics=metrics, signer=signer)
        agg = NtfAggregator(conn=conn, db=db, topics=c.topics, codec=Codec(), metrics=metrics,
                            registry=registry, threshold=policy.ntf_threshold,
                            policy_version=policy.version, grace=timedelta(days=grace_days),
                            interval=interval, now=clock, outbox=outbox)
        await serve_store(agg, outbox, until_idle, "aggregator")
        typer.echo(f"aggregator: {agg.facts} facts counted, "
                   f"{len(agg.published)} closed month(s) published", err=True)

    c.with_db("ntf", work)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _fixed(at: datetime) -> Callable[[], datetime]:
    """A clock that always says ``at`` (UTC unless it names a zone)."""
    fixed = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
    return lambda: fixed


async def serve_store(consumer: TrackedConsumer, outbox: Outbox | None,
                      until_idle: float | None, label: str) -> None:
    """Run a store-backed consumer until idle or signalled; then stop it and its outbox."""
    drain_on_signals(consumer)
    try:
        async with consumer:
            stats = await consumer.run(until_idle=until_idle)
    finally:
        if outbox is not None:
            await outbox.stop()
    typer.echo(f"{label}: {stats.records} records, {stats.duplicates} duplicates skipped, "
               f"{stats.bad} dead letters", err=True)


def inboxes(
    ctx: typer.Context,
    until_idle: UntilIdle = None,
    recipient: Annotated[
        list[str] | None,
        typer.Option(help="Only these recipients (repeatable); default: every TFL, WG, CSIL R."),
    ] = None,
) -> None:
    """Run the durable inbox consumers of the TFL, WG and CSIL R recipients."""
    c = get(ctx)
    conn = c.connection()
    chosen: list[Recipient] | None = None
    if recipient:
        try:
            chosen = [Recipient.parse(r) for r in recipient]
        except UsageError as exc:
            fail(str(exc), code=2)
        if any(r.cls not in INBOX_CLASSES for r in chosen):
            fail("only tfl:, wg: and csilr: recipients have durable inboxes", code=2)
    registry = c.key_registry()
    signer = c.signer(INBOXES, registry)
    c.serve_metrics()
    metrics = default_store_metrics()

    async def work(db: Database) -> None:
        outbox = Outbox(conn=conn, topics=c.topics, metrics=metrics, signer=signer,
                        kinds=[DEAD_LETTER_KIND])
        service = InboxService(conn=conn, db=db, topics=c.topics, codec=Codec(),
                               metrics=metrics, registry=registry, recipients=chosen,
                               outbox=outbox)
        await serve_store(service, outbox, until_idle, "inboxes")

    c.with_db("inboxes", work)
