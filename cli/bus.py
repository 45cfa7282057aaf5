"""The bus verbs: broker, topics, publish, inbox."""

from __future__ import annotations

import json
import logging
import signal
import sys
from collections.abc import AsyncIterator
from typing import Annotated, Any

import typer

from cli.context import Context, fail, get, read_text, run_async
from cli.services import routing_setup
from consumers.inbox import read_inbox
from consumers.inboxes import INBOX_CLASSES, InboxService, follow_inbox
from consumers.metrics import default_store_metrics
from consumers.store import Database
from planr.broker import EmbeddedBroker
from planr.domain import Agency, Recipient
from planr.errors import PlanrError, UsageError
from planr.signing import KeyRegistry, Signer
from planr.telemetry import default_metrics
from planr.topics import check_replication, provision
from producers.lines import parse_numbered_signal_lines
from producers.publisher import Publisher
from routing.explain import hold_back_lost_ocam_decisions
from schemas.codec import Codec
from schemas.validation import check_event_id, check_subject_id

topics_app = typer.Typer(help="Kafka topics of the bus.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("broker")(broker)
    app.add_typer(topics_app, name="topics")
    app.command("publish")(publish)
    app.command("withdraw")(withdraw)
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
    s = c.settings
    try:
        check_replication(s.replication_factor, s.min_insync_replicas)
    except UsageError as exc:
        fail(f"settings PLANR_REPLICATION_FACTOR / PLANR_MIN_INSYNC_REPLICAS: {exc}", code=2)
    conn = c.connection()
    names = c.topics.everything()
    try:
        created = run_async(provision(conn, c.topics, names,
                                      replication_factor=s.replication_factor,
                                      min_insync_replicas=s.min_insync_replicas))
    except PlanrError as exc:
        fail(str(exc))
    typer.echo(f"topics: {len(names)} wanted, {len(created)} created, "
               f"{len(names) - len(created)} already present")


def publish(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(metavar="FILE|-", help="JSON lines, or - for stdin.")],
    agency: Annotated[Agency, typer.Option(envvar="PLANR_AGENCY", help="Publishing service.")],
) -> None:
    """Publish JSON-line signals, signed with the agency's key (PLANR_SIGNING_KEY); prints
    one event id per published line."""
    c = get(ctx)
    conn = c.connection()
    signer = _agency_signer(c, agency)
    numbered, errors = parse_numbered_signal_lines(read_text(source).splitlines(), agency)
    # OCAM's decisions that the policy would deny to the common database: reported, held back
    good, refused = hold_back_lost_ocam_decisions(numbered, agency,
                                                  lambda: routing_setup(c).engine)
    errors += refused

    async def go() -> list[str]:
        async with Publisher(conn=conn, agency=agency, topics=c.topics, codec=Codec(),
                             metrics=default_metrics(), signer=signer) as pub:
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


def _agency_signer(c: Context, agency: Agency) -> Signer:
    """The agency's key; checked against the registry when this machine has one (an agency
    need not: the router checks every signature anyway)."""
    registry = c.key_registry() if c.key_registry_path.is_file() else None
    return c.signer(agency.value, registry)
def withdraw(
    ctx: typer.Context,
    event_id: Annotated[str, typer.Argument(help="The event to withdraw (a UUID).")],
    agency: Annotated[Agency, typer.Option(envvar="PLANR_AGENCY", help="The owning service.")],
    subject: Annotated[str, typer.Option(help="The event's subject id (the record key).")],
    version: Annotated[int, typer.Option(min=1, help="The latest version published.")] = 1,
) -> None:
    """Withdraw a signal: every recipient that holds it gets a retraction."""
    c = get(ctx)
    for name, check, value in (("EVENT_ID", check_event_id, event_id),
                               ("--subject", check_subject_id, subject)):
        try:
            check(value)
        except ValueError as exc:
            fail(f"{name}: {exc}", code=2)
    signer = _agency_signer(c, agency)
    conn = c.connection()

    async def go() -> None:
        async with Publisher(conn=conn, agency=agency, topics=c.topics, codec=Codec(),
                             metrics=default_metrics(), signer=signer) as pub:
            await pub.withdraw(event_id, subject_id=subject, version=version)

    try:
        run_async(go())
    except PlanrError as exc:
        fail(f"withdrawal failed: {exc}")
    typer.echo(event_id)


def _show(item: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(item, ensure_ascii=False))
    elif item.get("retracted"):  # the payload is gone: ids, time and reason only
        typer.echo(f"{item['delivery_id']}  {item['event_id']}  retracted "
                   f"({item['reason']}) at {item['retracted_at']}")
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

    async def stored(db: Database, registry: KeyRegistry) -> int:
        async with InboxService(conn=conn, db=db, topics=c.topics, codec=Codec(),
                                metrics=default_store_metrics(), registry=registry,
                                recipients=[r]) as service:
            return await printed(follow_inbox(service, db, Codec(), r, live=live))

    try:
        if r.cls in INBOX_CLASSES:
            registry = c.key_registry()
            n = c.with_db("inboxes", lambda db: stored(db, registry))
        else:
            n = run_async(printed(read_inbox(conn, c.topics, Codec(), r)))
    except KeyboardInterrupt:
        return
    except PlanrError as exc:
        fail(str(exc))
    if not as_json:
        typer.echo(f"{n} item(s) for {r}", err=True)
