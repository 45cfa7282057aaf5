"""``planr ftf ...``: the common database (FTF / T.E.R.): the projector service, the
consultations of the read side, and OCAM's worklist (pending fiches, forwarded requests)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Annotated, Any

import structlog
import typer

from cli.context import Context, fail, get, run_async
from cli.services import UntilIdle, serve_store
from consumers.ftf.consult import Answer, Consultations
from consumers.ftf.projector import Projector
from consumers.ftf.queries import consultation_log, governance_log, overdue
from consumers.ftf.worklist import (
    PendingFiche,
    Reply,
    Request,
    Worklist,
    answer_line,
    read_answers,
)
from consumers.metrics import default_store_metrics
from consumers.outbox import Outbox
from consumers.store import Database
from planr.domain import Agency, Status
from planr.errors import PlanrError
from planr.signing import PROJECTOR, KeyRegistry
from schemas.codec import Codec

log = structlog.get_logger(__name__)

ftf_app = typer.Typer(help="The common database (FTF / T.E.R.).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(ftf_app, name="ftf")


@ftf_app.command("project")
def project(ctx: typer.Context, until_idle: UntilIdle = None) -> None:
    """Run the common-database projector (the ftf-db delivery topic into the store)."""
    c = get(ctx)
    conn = c.connection()
    access = c.access_config()
    registry = c.key_registry()
    signer = c.signer(PROJECTOR, registry)
    c.serve_metrics()
    metrics = default_store_metrics()

    async def work(db: Database) -> None:
        outbox = Outbox(conn=conn, topics=c.topics, metrics=metrics, signer=signer)
        p = Projector(conn=conn, db=db, topics=c.topics, codec=Codec(), access=access,
                      metrics=metrics, registry=registry, outbox=outbox,
                      check_process=c.settings.check_process)
        await serve_store(p, outbox, until_idle, "projected")

    c.with_db("ftf", work)


async def _flush_outbox(c: Context, db: Database) -> None:
    """Send the consultation's audit records now, signed with the common database's
    (``projector``) key, when a broker and ``PLANR_SIGNING_KEY`` are configured; otherwise the
    projector service sends them. The same for every answer (no oracle)."""
    if c.settings.bootstrap_servers is None or c.settings.signing_key is None:
        return
    try:
        signer = c.load_signer(PROJECTOR, KeyRegistry.load(c.key_registry_path))
        async with Outbox(conn=c.connection(), topics=c.topics,
                          metrics=default_store_metrics(), signer=signer) as outbox:
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
    access = c.access_config()

    async def work(db: Database) -> Answer:
        cons = Consultations(db=db, access=access, codec=Codec(),
                             metrics=default_store_metrics())
        answer = await cons.show(service, subject, purpose, datetime.now(UTC))
        await _flush_outbox(c, db)
        return answer

    _emit(c.with_db("ftf", work), as_json)


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
    access = c.access_config()

    async def work(db: Database) -> Answer:
        cons = Consultations(db=db, access=access, codec=Codec(),
                             metrics=default_store_metrics())
        answer = await cons.list(service, purpose, datetime.now(UTC),
                                 status=status.value if status else None,
                                 arrondissement=arrondissement)
        await _flush_outbox(c, db)
        return answer

    _emit(c.with_db("ftf", work), as_json)


@ftf_app.command("overdue")
def overdue_cmd(
    ctx: typer.Context,
    at: Annotated[datetime | None, typer.Option(help="Reference time (default: now, UTC).")] = None,
    as_json: AsJson = False,
) -> None:
    """Included entries based on serious indications whose 6-month review is overdue."""
    c = get(ctx)
    now = (at.replace(tzinfo=UTC) if at and at.tzinfo is None else at) or datetime.now(UTC)
    found = c.with_db("ftf", lambda db: overdue(db, now))
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

    rows = c.with_db("ftf", governance_log if governance else consultation_log)
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


def _worklist(c: Context, db: Database) -> Worklist:
    return Worklist(db=db, access=c.access_config(), codec=Codec(),
                    metrics=default_store_metrics())


OcamAs = Annotated[Agency, typer.Option("--as", help="The service asking (OCAM only).")]


@ftf_app.command("pending")
def pending(ctx: typer.Context, service: OcamAs, as_json: AsJson = False) -> None:
    """OCAM's queue: fiches fed by services, waiting for OCAM's decision, oldest first."""
    c = get(ctx)

    async def work(db: Database) -> list[PendingFiche]:
        try:
            return await _worklist(c, db).pending(service, datetime.now(UTC))
        finally:
            await _flush_outbox(c, db)

    found = c.with_db("ftf", work)
    for p in found:
        typer.echo(json.dumps(p.public()) if as_json else p.line())
    typer.echo(f"{len(found)} fiche(s) waiting for a decision", err=True)


@ftf_app.command("requests")
def requests(ctx: typer.Context, service: OcamAs, as_json: AsJson = False) -> None:
    """OCAM's queue: consultations forwarded by services with indirect access, oldest first."""
    c = get(ctx)

    async def work(db: Database) -> list[Request]:
        try:
            return await _worklist(c, db).requests(service, datetime.now(UTC))
        finally:
            await _flush_outbox(c, db)

    found = c.with_db("ftf", work)
    for r in found:
        typer.echo(json.dumps(r.public(), ensure_ascii=False) if as_json else r.line())
    typer.echo(f"{len(found)} open request(s)", err=True)


@ftf_app.command("answer")
def answer(
    ctx: typer.Context,
    request: Annotated[str, typer.Argument(help="Request id, as 'ftf requests' lists it.")],
    service: OcamAs,
    reply: Annotated[Reply, typer.Option("--answer", help="OCAM's answer.")],
) -> None:
    """Answer a forwarded request; the answer goes to the requesting service only."""
    c = get(ctx)

    async def work(db: Database) -> dict[str, Any]:
        try:
            return await _worklist(c, db).answer(service, request, reply, datetime.now(UTC))
        finally:
            await _flush_outbox(c, db)

    message = c.with_db("ftf", work)
    typer.echo(f"answered {message['request_id']}: {message['answer']} "
               f"(to {message['service']})")


@ftf_app.command("answers")
def answers(ctx: typer.Context, service: As, as_json: AsJson = False) -> None:
    """OCAM's answers to the requests this service forwarded (its own answers topic)."""
    c = get(ctx)
    conn = c.connection()

    async def collect() -> list[dict[str, Any]]:
        return [m async for m in read_answers(conn, c.topics, Codec(), service)]

    try:
        found = run_async(collect())
    except PlanrError as exc:
        fail(str(exc))
    for m in found:
        typer.echo(json.dumps(m) if as_json else answer_line(m))
    typer.echo(f"{len(found)} answer(s)", err=True)
