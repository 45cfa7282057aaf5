"""The bus verbs: broker, topics, publish, inbox."""

from __future__ import annotations

import json
import logging
import signal
import sys
from collections.abc import AsyncIterator
from typing import Annotated, Any

import typer

from cli.context import fail, get, read_text, run_async
from consumers.inbox import read_inbox
from consumers.inboxes import INBOX_CLASSES, InboxService, follow_inbox
from consumers.metrics import default_store_metrics
from consumers.store import Database
from planr.broker import EmbeddedBroker
from planr.domain import Agency, Recipient
from planr.errors import PlanrError, UsageError
from planr.telemetry import default_metrics
from planr.topics import provision
from producers.lines import parse_signal_lines
from producers.publisher import Publisher
from schemas.codec import Codec

topics_app = typer.Typer(help="Kafka topics of the bus.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("broker")(broker)
    app.add_typer(topics_app, name="topics")
    app.command("publish")(publish)
    app.command("inbox")(inbox)


def broker(
    port: Annotated[int | None, typer.Option(help="Port (default: a free one).")] = None,
    authentication: Annotated[bool, typer.Option(
        "--authentication",
        help="Refuse clients that do not authenticate. The embedded broker stores no users, "
             "so it then admits no client at all: for showing refusal only.")] = False,
) -> None:
    """Run the embedded Tansu broker in the foreground (memory storage, loopback only)."""
    b = EmbeddedBroker(port=port, authentication=authentication)
    # before the address is printed: whoever reads it may send SIGTERM at once
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        b.launch()
    except PlanrError as exc:
        fail(str(exc))
    typer.echo(f"bootstrap: {b.bootstrap_servers}")
    sys.stdout.flush()
    try:
        b.wait()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        b.terminate()


@topics_app.command("provision")
def topics_provision(ctx: typer.Context) -> None:
    """Create every topic the bus needs; a second run is a no-op."""
    # a one-shot command: its own error line says what failed; the client's retries are noise
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    c = get(ctx)
    conn = c.connection()
    names = c.topics.everything()
    try:
        created = run_async(provision(conn, c.topics, names))
    except PlanrError as exc:
        fail(str(exc))
    typer.echo(f"topics: {len(names)} wanted, {len(created)} created, "
               f"{len(names) - len(created)} already present")


def publish(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(metavar="FILE|-", help="JSON lines, or - for stdin.")],
    agency: Annotated[Agency, typer.Option(envvar="PLANR_AGENCY", help="Publishing service.")],
) -> None:
    """Publish JSON-line signals; prints one event id per published line."""
    c = get(ctx)
    conn = c.connection()
    good, errors = parse_signal_lines(read_text(source).splitlines(), agency)

    async def go() -> list[str]:
        async with Publisher(conn=conn, agency=agency, topics=c.topics, codec=Codec(),
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


def _show(item: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(item, ensure_ascii=False))
    elif "delivery_id" in item:
        typer.echo(f"{item['delivery_id']}  {item['event_id']}  {item['rule']:<22} "
                   f"{item['payload'].get('occurred_at', '')}")
    else:
        typer.echo(f"{item['period']}  {item['arrondissement']:<16} "
                   f"{item['phenomenon']:<26} {item['shown']:>6}")


def inbox(
    ctx: typer.Context,
    recipient: Annotated[str, typer.Argument(help="e.g. tfl:brussel, wg:internet, ntf")],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    live: Annotated[bool, typer.Option("--live", help="Keep following (durable inboxes).")] = False,
) -> None:
    """Print what a recipient has received (TFL, WG, CSIL R: from its durable inbox, first
    caught up with its topic; others: read from the topic)."""
    c = get(ctx)
    try:
        r = Recipient.parse(recipient)
    except UsageError as exc:
        fail(str(exc), code=2)
    conn = c.connection()

    async def printed(items: AsyncIterator[dict[str, Any]]) -> int:
        n = 0
        async for item in items:
            _show(item, as_json)
            n += 1
        return n

    async def stored(db: Database) -> int:
        async with InboxService(conn=conn, db=db, topics=c.topics, codec=Codec(),
                                metrics=default_store_metrics(), recipients=[r]) as service:
            return await printed(follow_inbox(service, db, Codec(), r, live=live))

    try:
        if r.cls in INBOX_CLASSES:
            n = c.with_db("inboxes", stored)
        else:
            n = run_async(printed(read_inbox(conn, c.topics, Codec(), r)))
    except KeyboardInterrupt:
        return
    except PlanrError as exc:
        fail(str(exc))
    if not as_json:
        typer.echo(f"{n} item(s) for {r}", err=True)
