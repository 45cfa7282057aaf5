"""``planr jib ...``: the Joint Information Box: the consensus process, proposals and votes
(signed with ``PLANR_SIGNING_KEY``), and consultations of the JIB's store (``PLANR_JIB_DB_URL``).

Grounds and reasons are content: they go to the signed record and the JIB's store, never to a
log line or an error message.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import structlog
import typer
from aiokafka.errors import KafkaError

from cli.context import Context, fail, get, read_text
from cli.services import UntilIdle, serve_store
from consumers.jib.consensus import JibConsensus
from consumers.jib.consult import JibAnswer, JibConsultations
from consumers.jib.panels import DEFAULT_PANELS_FILE, Panels
from consumers.metrics import default_store_metrics
from consumers.outbox import Outbox
from consumers.store import Database
from planr.errors import PlanrError, UsageError
from planr.parties import JIB_OWNER, is_tfl, parse_party
from planr.signing import KeyRegistry, Signer
from producers.jib import JibSubmitter, encode_submission
from routing.jib import JibRouting
from routing.policy import Policy
from schemas.codec import Codec
from schemas.jib import MAX_WINDOW, OUTCOMES
from schemas.names import JIB_PROPOSAL, JIB_VOTE
from schemas.validation import check_event_id, check_subject_id

log = structlog.get_logger(__name__)

jib_app = typer.Typer(help="The Joint Information Box (JIB).", no_args_is_help=True)
DEFAULT_WINDOW = timedelta(days=14)

As = Annotated[str, typer.Option("--as", help="Acting party: an agency id or tfl:<arr>.")]
AsJson = Annotated[bool, typer.Option("--json", help="JSON output.")]


def register(app: typer.Typer) -> None:
    app.add_typer(jib_app, name="jib")


# ---- keys, panels, policy ---------------------------------------------------------------


def key_registry(c: Context) -> KeyRegistry:
    path = c.settings.key_registry or c.settings.data_dir / "keys" / "registry.yaml"
    try:
        return KeyRegistry.load(path)
    except UsageError as exc:
        fail(f"PLANR_KEY_REGISTRY: {exc}", code=2)


def signer_for(c: Context, owner: str, registry: KeyRegistry) -> Signer:
    """The key of ``PLANR_SIGNING_KEY`` as ``owner``'s, registered and valid now."""
    path = c.settings.signing_key
    if path is None:
        fail(f"PLANR_SIGNING_KEY is not set: this command signs with a key of {owner}", code=2)
    try:
        signer = Signer.from_file(path, owner=owner)
        registry.check_signer(signer, at=datetime.now(UTC))
    except UsageError as exc:
        fail(f"PLANR_SIGNING_KEY: {exc}", code=2)
    return signer


def load_panels(path: Path) -> Panels:
    try:
        return Panels.load(path)
    except UsageError as exc:
        fail(str(exc), code=2)


def jib_routing(c: Context) -> JibRouting:
    try:
        policy = Policy.load(c.settings.policy)
    except UsageError as exc:
        fail(str(exc), code=2)
    return JibRouting(policy.document.jib, policy.version)


def party(text: str) -> str:
    try:
        return parse_party(text)
    except UsageError as exc:
        fail(f"--as: {exc}", code=2)


# ---- the consensus process --------------------------------------------------------------


@jib_app.command("consensus")
def consensus(
    ctx: typer.Context,
    until_idle: UntilIdle = None,
    tick_interval: Annotated[float, typer.Option(
        help="Seconds between checks for passed deadlines (a signed tick); 0: never.",
        min=0)] = 5.0,
    panels: Annotated[Path, typer.Option(
        help="Per arrondissement, the services whose consent a proposal needs.")
    ] = DEFAULT_PANELS_FILE,
) -> None:
    """Run the JIB's consensus process: proposals, votes and ticks into decisions."""
    c = get(ctx)
    conn = c.connection()
    registry = key_registry(c)
    signer = signer_for(c, JIB_OWNER, registry)
    pan, routing = load_panels(panels), jib_routing(c)
    c.serve_metrics()
    metrics = default_store_metrics()

    async def work(db: Database) -> None:
        outbox = Outbox(conn=conn, topics=c.topics, metrics=metrics, signer=signer)
        jib = JibConsensus(conn=conn, db=db, topics=c.topics, codec=Codec(), metrics=metrics,
                           registry=registry, panels=pan, routing=routing, outbox=outbox,
                           signer=signer, tick_interval=tick_interval)
        await serve_store(jib, outbox, until_idle, "jib consensus")

    c.with_db("jib", work)


# ---- proposals and votes ----------------------------------------------------------------


def _submit(c: Context, owner: str, name: str, record: dict[str, Any]) -> None:
    conn = c.connection()
    signer = signer_for(c, owner, key_registry(c))
    codec = Codec()
    try:
        encode_submission(codec, signer, name, record)  # every check before the broker
    except ValueError as exc:  # names the field, never its value
        fail(str(exc), code=2)

    async def go() -> None:
        async with JibSubmitter(conn=conn, topics=c.topics, codec=codec) as sub:
            await sub.submit(signer, name, record)

    try:
        asyncio.run(go())
    except PlanrError as exc:
        fail(f"not submitted: {exc}")
    except (KafkaError, OSError) as exc:  # the broker's message may name hosts: the type only
        fail(f"not submitted: broker unreachable or refused ({type(exc).__name__})")


def _echo_record(record: dict[str, Any], as_json: bool, hidden: str) -> None:
    shown = {k: (v.isoformat().replace("+00:00", "Z") if isinstance(v, datetime) else v)
             for k, v in record.items() if k != hidden}
    if as_json:
        typer.echo(json.dumps(shown))
    else:
        typer.echo(next(iter(shown.values())))


@jib_app.command("propose")
def propose(  # noqa: PLR0917 - Typer maps parameters to options
    ctx: typer.Context,
    acting: As,
    subject: Annotated[str, typer.Option(help="The person's subject id.")],
    action: Annotated[str, typer.Option(help="insert or remove.")],
    grounds: Annotated[str, typer.Option(
        help="File holding the grounds (content), or - for standard input.")],
    arrondissement: Annotated[str | None, typer.Option(
        help="Whose panel decides (default: a TFL's own; a service must give it).")] = None,
    deadline: Annotated[datetime | None, typer.Option(
        help="Undecided at this time (UTC if no zone): expired. Default: in 14 days.")] = None,
    as_json: AsJson = False,
) -> None:
    """Propose to insert a person into the JIB, or to remove one; prints the proposal id."""
    c = get(ctx)
    proposer = party(acting)
    if arrondissement is None and is_tfl(proposer):
        arrondissement = proposer.split(":", 1)[1]
    if arrondissement is None:
        fail("--arrondissement: a service proposing must name the arrondissement", code=2)
    now = datetime.now(UTC)
    due = deadline or now + DEFAULT_WINDOW
    due = due if due.tzinfo else due.replace(tzinfo=UTC)
    if due > now + MAX_WINDOW:
        fail(f"--deadline: at most {MAX_WINDOW.days} days from now", code=2)
    record = {"proposal_id": str(uuid.uuid4()), "proposer": proposer,
              "arrondissement": arrondissement, "subject_id": subject, "action": action,
              "grounds": read_text(grounds).strip(), "proposed_at": now, "deadline": due}
    _submit(c, proposer, JIB_PROPOSAL, record)
    _echo_record(record, as_json, "grounds")


@jib_app.command("vote")
def vote(  # noqa: PLR0917 - Typer maps parameters to options
    ctx: typer.Context,
    proposal: Annotated[str, typer.Argument(help="Proposal id.")],
    choice: Annotated[str, typer.Argument(help="approve or object.")],
    acting: As,
    reason: Annotated[str, typer.Option(help="Why (content: kept in the JIB only).")],
    as_json: AsJson = False,
) -> None:
    """Vote on a proposal as one of the services whose consent it needs; prints the vote id."""
    c = get(ctx)
    service = party(acting)
    record = {"vote_id": str(uuid.uuid4()), "proposal_id": proposal, "service": service,
              "choice": choice, "reason": reason, "cast_at": datetime.now(UTC)}
    _submit(c, service, JIB_VOTE, record)
    _echo_record(record, as_json, "reason")


# ---- consultations ----------------------------------------------------------------------


def _consult(c: Context, verb: str, acting: str, **kwargs: Any) -> JibAnswer:
    async def work(db: Database) -> JibAnswer:
        cons = JibConsultations(db=db, codec=Codec(), metrics=default_store_metrics())
        now = datetime.now(UTC)
        if verb == "show":
            answer = await cons.show(acting, now=now, **kwargs)
        elif verb == "list":
            answer = await cons.list(acting, now=now, **kwargs)
        else:
            answer = await cons.members(acting, now=now, **kwargs)
        await _flush_outbox(c, db)
        return answer

    return c.with_db("jib", work)


async def _flush_outbox(c: Context, db: Database) -> None:
    """Send the consultation's audit record now when a broker is configured; otherwise the
    consensus process sends it. The same for every answer (no oracle)."""
    if c.settings.bootstrap_servers is None:
        return
    try:
        async with Outbox(conn=c.connection(), topics=c.topics,
                          metrics=default_store_metrics()) as outbox:
            await asyncio.wait_for(outbox.flush(db), timeout=30)
    except (PlanrError, OSError, TimeoutError):
        log.warning("jib.outbox_deferred")


def _emit(answer: JibAnswer, as_json: bool) -> None:
    text, code = answer.render(as_json=as_json)
    typer.echo(text, nl=False)
    raise typer.Exit(code)


def _checked(value: str | None, check: Any, option: str) -> None:
    if value is None:
        return
    try:
        check(value)
    except ValueError as exc:
        fail(f"{option}: {exc}", code=2)


@jib_app.command("show")
def show(
    ctx: typer.Context,
    proposal: Annotated[str, typer.Argument(help="Proposal id.")],
    acting: As,
    as_json: AsJson = False,
) -> None:
    """A proposal with its votes and decision, for its participants (logged)."""
    c = get(ctx)
    who = party(acting)
    _checked(proposal, check_event_id, "PROPOSAL")
    _emit(_consult(c, "show", who, proposal_id=proposal), as_json)


@jib_app.command("list")
def list_(
    ctx: typer.Context,
    acting: As,
    state: Annotated[str | None, typer.Option(
        help="open, adopted, rejected or expired.")] = None,
    subject: Annotated[str | None, typer.Option(help="Only proposals about this person.")] = None,
    as_json: AsJson = False,
) -> None:
    """The proposals the acting party takes part in (logged)."""
    c = get(ctx)
    who = party(acting)
    if state is not None and state not in ("open", *OUTCOMES):
        fail("--state: one of open, " + ", ".join(OUTCOMES), code=2)
    _checked(subject, check_subject_id, "--subject")
    _emit(_consult(c, "list", who, state=state, subject=subject), as_json)


@jib_app.command("members")
def members(
    ctx: typer.Context,
    acting: As,
    subject: Annotated[str | None, typer.Option(help="Is this person a member?")] = None,
    as_json: AsJson = False,
) -> None:
    """The JIB's current members that the acting party took part in inserting (logged)."""
    c = get(ctx)
    who = party(acting)
    _checked(subject, check_subject_id, "--subject")
    _emit(_consult(c, "members", who, subject=subject), as_json)
