"""``planr ftf ...``: the common database (FTF / T.E.R.); ``planr inboxes``: durable inboxes."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import structlog
import typer

from consumers.consult import Answer, Consultations, consultation_log
from consumers.governance import AccessConfig
from consumers.inboxes import INBOX_CLASSES, InboxService, read_stored
from consumers.metrics import default_store_metrics
from consumers.outbox import Outbox
from consumers.projector import Projector, overdue
from consumers.store import Database, sqlite_url
from consumers.store.tables import governance_audit
from consumers.tracked import TrackedConsumer
from planr.cli.context import Context, fail, get
from planr.domain import Agency, Recipient, Status
from planr.errors import PlanrError, UsageError
from planr.kafka import KafkaConnection
from schemas.codec import Codec

log = structlog.get_logger(__name__)
T = TypeVar("T")

ftf_app = typer.Typer(help="The common database (FTF / T.E.R.).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(ftf_app, name="ftf")
    app.command("inboxes")(inboxes)


def database(c: Context) -> Database:
    return Database(c.settings.db_url or sqlite_url(c.settings.data_dir))


def access_config(c: Context) -> AccessConfig:
    try:
        return AccessConfig.load(c.settings.ftf_access)
    except UsageError as exc:
        fail(str(exc), code=2)


def _with_db(c: Context, work: Callable[[Database], Awaitable[T]]) -> T:
    async def go() -> T:
        async with database(c) as db:
            return await work(db)

    try:
        return asyncio.run(go())
    except PlanrError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"database unreachable ({type(exc).__name__})")


async def _serve(consumer: TrackedConsumer, outbox: Outbox | None, until_idle: float | None,
                 label: str) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, consumer.request_stop)
    try:
        async with consumer:
            stats = await consumer.run(until_idle=until_idle)
    finally:
        if outbox is not None:
            await outbox.stop()
    typer.echo(f"{label}: {stats.records} records, {stats.duplicates} duplicates skipped, "
               f"{stats.bad} dead letters", err=True)


UntilIdle = Annotated[
    float | None, typer.Option(help="Exit after this many seconds without input.", min=0.1)
]


@ftf_app.command("project")
def project(ctx: typer.Context, until_idle: UntilIdle = None) -> None:
    """Run the common-database projector (the ftf-db delivery topic into the store)."""
    c = get(ctx)
    conn = c.connection()
    access = access_config(c)
    c.serve_metrics()
    metrics = default_store_metrics()

    async def work(db: Database) -> None:
        outbox = Outbox(conn=conn, topics=c.topics, metrics=metrics)
        p = Projector(conn=conn, db=db, topics=c.topics, codec=Codec(), access=access,
                      metrics=metrics, outbox=outbox)
        await _serve(p, outbox, until_idle, "projected")

    _with_db(c, work)


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
    c.serve_metrics()
    metrics = default_store_metrics()

    async def work(db: Database) -> None:
        outbox = Outbox(conn=conn, topics=c.topics, metrics=metrics)
        service = InboxService(conn=conn, db=db, topics=c.topics, codec=Codec(),
                               metrics=metrics, recipients=chosen, outbox=outbox)
        await _serve(service, outbox, until_idle, "inboxes")

    _with_db(c, work)


async def _flush_outbox(c: Context, db: Database) -> None:
    """Send the consultation's audit records now when a broker is configured; otherwise the
    projector service sends them. The same for every answer (no oracle)."""
    if c.settings.bootstrap_servers is None:
        return
    try:
        async with Outbox(conn=c.connection(), topics=c.topics,
                          metrics=default_store_metrics()) as outbox:
            await asyncio.wait_for(outbox.flush(db), timeout=30)
    except (PlanrError, OSError, TimeoutError):
        log.warning("ftf.outbox_deferred")


def _emit(answer: Answer, as_json: bool) -> None:
    text, code = answer.render(as_json=as_json)
    typer.echo(text, nl=False)
    raise typer.Exit(code)


As = Annotated[Agency, typer.Option("--as", help="The consulting service.")]
AsJson = Annotated[bool, typer.Option("--json", help="JSON output.")]


@ftf_app.command("show")
def show(
    ctx: typer.Context,
    subject: Annotated[str, typer.Argument(help="Subject id.")],
    service: As,
    purpose: Annotated[str, typer.Option(help="Why the service consults (logged).")],
    as_json: AsJson = False,
) -> None:
    """Consult one subject, under the consulting service's access mode."""
    c = get(ctx)
    access = access_config(c)

    async def work(db: Database) -> Answer:
        cons = Consultations(db=db, access=access, codec=Codec(),
                             metrics=default_store_metrics())
        answer = await cons.show(service, subject, purpose, datetime.now(UTC))
        await _flush_outbox(c, db)
        return answer

    _emit(_with_db(c, work), as_json)


@ftf_app.command("list")
def list_(  # noqa: PLR0917 - Typer maps parameters to options
    ctx: typer.Context,
    service: As,
    status: Annotated[Status | None, typer.Option(help="Only fiches with this status.")] = None,
    arrondissement: Annotated[str | None, typer.Option(help="Judicial arrondissement id.")] = None,
    purpose: Annotated[str, typer.Option(help="Why the service consults (logged).")] = "",
    as_json: AsJson = False,
) -> None:
    """List included fiches, under the consulting service's access mode."""
    c = get(ctx)
    access = access_config(c)

    async def work(db: Database) -> Answer:
        cons = Consultations(db=db, access=access, codec=Codec(),
                             metrics=default_store_metrics())
        answer = await cons.list(service, purpose, datetime.now(UTC),
                                 status=status.value if status else None,
                                 arrondissement=arrondissement)
        await _flush_outbox(c, db)
        return answer

    _emit(_with_db(c, work), as_json)


@ftf_app.command("overdue")
def overdue_cmd(
    ctx: typer.Context,
    at: Annotated[datetime | None, typer.Option(help="Reference time (default: now, UTC).")] = None,
    as_json: AsJson = False,
) -> None:
    """Included entries based on serious indications whose 6-month review is overdue."""
    c = get(ctx)
    now = (at.replace(tzinfo=UTC) if at and at.tzinfo is None else at) or datetime.now(UTC)
    found = _with_db(c, lambda db: overdue(db, now))
    default_store_metrics().ftf_overdue.set(len(found))
    for f in found:
        p = f.public()
        if as_json:
            typer.echo(json.dumps({k: p[k] for k in ("subject_id", "review_due",
                                                     "last_info_at", "threat_level")}))
        else:
            typer.echo(f"{p['subject_id']:<16} review due {p['review_due']}  "
                       f"last information {p['last_info_at']}")
    typer.echo(f"{len(found)} overdue review(s)", err=True)


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat().replace("+00:00", "Z") if isinstance(v, datetime) else v
            for k, v in row.items()}


@ftf_app.command("audit")
def audit(
    ctx: typer.Context,
    governance: Annotated[bool, typer.Option(
        "--governance", help="The projector's governance audit instead of consultations.")
    ] = False,
    as_json: AsJson = False,
) -> None:
    """Print the consultation log (or the governance audit), for the oversight bodies."""
    c = get(ctx)

    async def gov(db: Database) -> list[dict[str, Any]]:
        async with db.engine.connect() as conn:
            t = governance_audit
            rows = await conn.execute(t.select().order_by(t.c.at, t.c.event_id, t.c.reason))
            return [dict(r) for r in rows.mappings()]

    rows = _with_db(c, gov if governance else consultation_log)
    for row in rows:
        r = _jsonable(row)
        if as_json:
            typer.echo(json.dumps(r, ensure_ascii=False))
        elif governance:
            typer.echo(f"{r['at']}  {r['agency']:<7} {r['reason']:<22} {r['event_id']}  "
                       f"{r['subject_id']}  {r['detail']}")
        else:
            typer.echo(f"{r['consulted_at']}  {r['service']:<7} {r['access_mode']:<17} "
                       f"{r['verb']:<5} {r['subject_id'] or '(' + r['query'] + ')'}  "
                       f"{r['answer_class']:<10} purpose={r['purpose']!r}")
    typer.echo(f"{len(rows)} record(s)", err=True)


def stored_inbox(c: Context, recipient: Recipient, *, as_json: bool, live: bool) -> int:
    """``planr inbox`` for a recipient with a durable inbox: catch the inbox up with its topic,
    then print from the store; ``live`` keeps catching up and printing. Returns the count."""
    conn = c.connection()
    codec = Codec()
    metrics = default_store_metrics()

    def show(item: dict[str, Any]) -> None:
        if as_json:
            typer.echo(json.dumps(item, ensure_ascii=False))
        else:
            typer.echo(f"{item['delivery_id']}  {item['event_id']}  {item['rule']:<22} "
                       f"{item['payload'].get('occurred_at', '')}")

    async def work(db: Database) -> int:
        printed = 0
        position: tuple[int, int] | None = None
        async with InboxService(conn=conn, db=db, topics=c.topics, codec=codec,
                                metrics=metrics, recipients=[recipient]) as service:
            while True:
                await service.catch_up()
                for pos, item in await read_stored(db, codec, recipient, position):
                    show(item)
                    printed += 1
                    position = pos
                if not live:
                    return printed
                await asyncio.sleep(1.0)

    try:
        return _with_db(c, work)
    except KeyboardInterrupt:
        return 0


class StoreServices:
    """The projector and the inbox consumers as services of ``planr run``."""

    def __init__(self, services: list[TrackedConsumer]) -> None:
        self.services = services
        self.tasks = [asyncio.create_task(s.run()) for s in services]

    async def finish(self, quiet: float = 1.5, limit: float = 120.0) -> None:
        """Wait until no service has taken a record for ``quiet`` seconds, then stop them."""
        deadline = time.monotonic() + limit
        last, since = -1, time.monotonic()
        while time.monotonic() - since < quiet and time.monotonic() < deadline:
            if any(t.done() for t in self.tasks):
                break
            now = sum(s.stats.records for s in self.services)
            if now != last:
                last, since = now, time.monotonic()
            await asyncio.sleep(0.2)
        for s in self.services:
            s.request_stop()
        await asyncio.gather(*self.tasks)
        for s in self.services:
            typer.echo(f"{s.name}: {s.stats.records} records stored, "
                       f"{s.stats.duplicates} duplicates skipped", err=True)


async def start_services(
    c: Context, conn: KafkaConnection, stack: AsyncExitStack, *, fresh: bool = False
) -> StoreServices:
    """Start the projector and every inbox consumer on ``stack``; ``fresh`` starts from an
    empty demo database (the embedded broker forgets everything between runs)."""
    url = c.settings.db_url
    if url is None and fresh:
        path = c.settings.data_dir / "demo.db"
        for stale in (path, path.with_name("demo.db-wal"), path.with_name("demo.db-shm")):
            stale.unlink(missing_ok=True)
        url = sqlite_url(c.settings.data_dir, "demo.db")
    db = await stack.enter_async_context(Database(url or sqlite_url(c.settings.data_dir)))
    metrics = default_store_metrics()
    codec = Codec()
    services: list[TrackedConsumer] = []
    for make in (
        lambda o: Projector(conn=conn, db=db, topics=c.topics, codec=codec,
                            access=access_config(c), metrics=metrics, outbox=o),
        lambda o: InboxService(conn=conn, db=db, topics=c.topics, codec=codec,
                               metrics=metrics, outbox=o),
    ):
        outbox = await stack.enter_async_context(
            Outbox(conn=conn, topics=c.topics, metrics=metrics))
        services.append(await stack.enter_async_context(make(outbox)))
    return StoreServices(services)
