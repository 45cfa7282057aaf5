"""The bus verbs: broker, topics, publish, route, inbox."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from consumers.inbox import read_inbox
from consumers.inboxes import INBOX_CLASSES
from planr.broker import EmbeddedBroker
from planr.cli.context import Context, fail, get, run_async
from planr.cli.ftf import stored_inbox
from planr.domain import Agency, Recipient
from planr.errors import PlanrError, UsageError
from planr.telemetry import default_metrics
from planr.topics import provision
from producers.publisher import Publisher
from routing.aggregator import Aggregator
from routing.router import Router, drain_on
from routing.setup import RoutingSetup, prepare
from schemas.codec import Codec
from schemas.models import SignalIn, describe_errors

topics_app = typer.Typer(help="Kafka topics of the bus.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("broker")(broker)
    app.add_typer(topics_app, name="topics")
    app.command("publish")(publish)
    app.command("route")(route)
    app.command("inbox")(inbox)
    app.command("aggregate")(aggregate)


def broker(
    port: Annotated[int | None, typer.Option(help="Port (default: a free one).")] = None,
) -> None:
    """Run the embedded Tansu broker in the foreground (memory storage, loopback only)."""
    b = EmbeddedBroker(port=port)
    try:
        b.launch()
    except PlanrError as exc:
        fail(str(exc))
    typer.echo(f"bootstrap: {b.bootstrap_servers}")
    sys.stdout.flush()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        b.wait()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        b.terminate()


@topics_app.command("provision")
def topics_provision(ctx: typer.Context) -> None:
    """Create every topic the bus needs; a second run is a no-op."""
    c = get(ctx)
    conn = c.connection()
    names = c.topics.everything()
    created = run_async(provision(conn, c.topics, names))
    typer.echo(f"topics: {len(names)} wanted, {len(created)} created, "
               f"{len(names) - len(created)} already present")


def _read_lines(source: str) -> list[str]:
    if source == "-":
        return sys.stdin.read().splitlines()
    try:
        return Path(source).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        fail(f"cannot read {source}: {exc.strerror}", code=2)
    except UnicodeDecodeError:
        fail(f"{source} is not UTF-8 text", code=2)


def parse_signal_lines(lines: list[str], agency: Agency) -> tuple[list[SignalIn], list[str]]:
    """Valid signals, and one error line per invalid input line (field names, no values)."""
    good: list[SignalIn] = []
    errors: list[str] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            s = SignalIn.model_validate_json(line)
        except ValidationError as exc:
            errors.append(f"line {number}: {describe_errors(exc)}")
            continue
        if s.agency is not None and s.agency is not agency:
            errors.append(f"line {number}: agency: does not match --agency {agency.value}")
            continue
        good.append(s)
    return good, errors


def publish(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(metavar="FILE|-", help="JSON lines, or - for stdin.")],
    agency: Annotated[Agency, typer.Option(envvar="PLANR_AGENCY", help="Publishing service.")],
) -> None:
    """Publish JSON-line signals; prints one event id per published line."""
    c = get(ctx)
    conn = c.connection()
    good, errors = parse_signal_lines(_read_lines(source), agency)

    async def go() -> list[str]:
        async with Publisher(conn=conn, agency=agency, topics=c.topics, codec=_codec(),
                             metrics=default_metrics()) as pub:
            return await pub.publish_many(good)

    ids: list[str] = []
    if good:
        try:
            ids = run_async(go())
        except PlanrError as exc:
            fail(f"publishing failed: {exc}")
    for event_id in ids:
        typer.echo(event_id)
    for e in errors:
        typer.echo(e, err=True)
    if errors:
        typer.echo(f"error: {len(errors)} invalid line(s) not published; "
                   f"{len(ids)} published", err=True)
        raise typer.Exit(1)


def _codec() -> Codec:
    return Codec()


def _setup(c: Context) -> RoutingSetup:
    try:
        return prepare(c.settings.policy)
    except UsageError as exc:
        fail(str(exc), code=2)


def route(
    ctx: typer.Context,
    until_idle: Annotated[
        float | None,
        typer.Option(help="Exit after this many seconds without input.", min=0.1),
    ] = None,
    group: Annotated[
        str, typer.Option(envvar="PLANR_ROUTER_GROUP", help="Consumer group id.")
    ] = "planr-router",
) -> None:
    """Run the routing consumer over every ingress topic."""
    c = get(ctx)
    conn = c.connection()
    setup = _setup(c)
    c.serve_metrics()

    async def go() -> None:
        async with Router(conn=conn, topics=c.topics, engine=setup.engine, views=setup.views,
                          codec=setup.codec, metrics=default_metrics(), group_id=group) as r:
            await drain_on(r, signal.SIGTERM, signal.SIGINT)
            stats = await r.run(until_idle=until_idle)
        typer.echo(
            f"routed: {stats.signals} signals, {sum(stats.deliveries.values())} deliveries, "
            f"{sum(stats.denials.values())} denials, "
            f"{sum(stats.dead_letters.values())} dead letters",
            err=True,
        )

    try:
        run_async(go())
    except PlanrError as exc:
        fail(f"router stopped: {exc}")


def inbox(
    ctx: typer.Context,
    recipient: Annotated[str, typer.Argument(help="e.g. tfl:brussel, wg:internet, ntf")],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    live: Annotated[bool, typer.Option("--live", help="Keep following (durable inboxes).")] = False,
) -> None:
    """Print what a recipient has received (TFL, WG, CSIL R: from its durable inbox, first
    caught up with its topic)."""
    c = get(ctx)
    try:
        r = Recipient.parse(recipient)
    except UsageError as exc:
        fail(str(exc), code=2)
    if r.cls in INBOX_CLASSES:
        count = stored_inbox(c, r, as_json=as_json, live=live)
        if not as_json:
            typer.echo(f"{count} item(s) for {r}", err=True)
        return
    conn = c.connection()

    async def go() -> int:
        n = 0
        async for item in read_inbox(conn, c.topics, _codec(), r):
            n += 1
            if as_json:
                typer.echo(json.dumps(item, ensure_ascii=False))
            elif "delivery_id" in item:
                p = item["payload"]
                typer.echo(f"{item['delivery_id']}  {item['event_id']}  {item['rule']:<22} "
                           f"{p.get('occurred_at', '')}")
            else:
                typer.echo(f"{item['period']}  {item['arrondissement']:<16} "
                           f"{item['phenomenon']:<26} {item['count']}")
        return n

    n = asyncio.run(go())
    if not as_json:
        typer.echo(f"{n} item(s) for {r}", err=True)


def aggregate(
    ctx: typer.Context,
    until_idle: Annotated[
        float | None,
        typer.Option(help="Exit after this many seconds without input.", min=0.1),
    ] = None,
    interval: Annotated[
        float, typer.Option(envvar="PLANR_NTF_INTERVAL", help="Seconds between emissions.")
    ] = 60.0,
    group: Annotated[
        str, typer.Option(envvar="PLANR_NTF_GROUP", help="Consumer group id.")
    ] = "planr-ntf-aggregator",
) -> None:
    """Run the National Taskforce aggregator (counts by phenomenon, arrondissement, month)."""
    c = get(ctx)
    conn = c.connection()
    c.serve_metrics()

    async def go() -> None:
        async with Aggregator(conn=conn, topics=c.topics, codec=_codec(),
                              metrics=default_metrics(), group_id=group,
                              interval=interval) as agg:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, agg.request_stop)
            await agg.run(until_idle=until_idle)
        typer.echo(f"aggregated: {agg.facts} facts, {agg.emitted} aggregate records", err=True)

    try:
        run_async(go())
    except PlanrError as exc:
        fail(f"aggregator stopped: {exc}")
