"""``planr policy``: tooling for the people who write need-to-know policy.

- ``check FILE`` validates a policy (and its views against their ``.avsc``);
- ``explain FILE --event SIGNAL.json`` shows, for one signal, every candidate recipient with
  its outcome, the deciding rule(s) and the view (:mod:`routing.explain`);
- ``apply FILE`` applies a new policy to the retained history (the router's ledger says who
  holds what: newly entitled recipients receive, no-longer-entitled ones get a retraction);
- ``diff OLD NEW --events SIGNALS.jsonl`` dry-runs both policies over a history of signals and
  shows the deliveries that would be added and removed, per recipient class
  (:mod:`routing.diff`).

Need-to-know applies here too: output and errors carry ids, labels and field names, never a
signal's summary or other free text.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from cli.context import fail, get, read_text, run_async
from consumers.ledger import StoreLedger
from planr.domain import Agency
from planr.errors import PlanrError, UsageError
from planr.signing import ROUTER
from planr.telemetry import default_metrics
from routing.diff import PolicyDiff, compare, read_history
from routing.emitter import RouterStats
from routing.explain import descriptions, explanation, publisher_of, signal_facts
from routing.policy import AGGREGATE
from routing.router import Router
from routing.setup import RoutingSetup, prepare
from schemas.codec import Codec
from schemas.models import SignalIn, describe_errors

policy_app = typer.Typer(
    help="Check, explain and compare need-to-know policies.", no_args_is_help=True
)

PolicyFile = Annotated[
    Path, typer.Argument(envvar="PLANR_POLICY", help="Policy file (YAML).", show_default=False)
]
AgencyOption = Annotated[
    Agency | None,
    typer.Option(envvar="PLANR_AGENCY", help="Publishing service, for signals that omit it."),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]


def register(app: typer.Typer) -> None:
    app.add_typer(policy_app, name="policy")


def _load(path: Path, codec: Codec | None = None) -> RoutingSetup:
    try:
        return prepare(path, codec)
    except UsageError as exc:
        fail(str(exc), code=2)


# ---- check --------------------------------------------------------------------------------


@policy_app.command("check")
def check(file: PolicyFile) -> None:
    """Validate a policy file; print its rule count and version. Exit 2 when invalid."""
    setup = _load(file)
    doc = setup.policy.document
    forbids = sum(1 for r in doc.rules if r.effect == "forbid")
    typer.echo(f"ok: {file}")
    typer.echo(f"name: {doc.name}")
    typer.echo(f"rules: {len(doc.rules)} ({forbids} forbid, {len(doc.rules) - forbids} permit)")
    typer.echo(f"views: {len(doc.views)}")
    if doc.jib is not None:
        jib_forbids = sum(1 for r in doc.jib.rules if r.effect == "forbid")
        typer.echo(f"jib rules: {len(doc.jib.rules)} ({jib_forbids} forbid, "
                   f"{len(doc.jib.rules) - jib_forbids} permit)")
    typer.echo(f"version: {setup.policy.version}")


# ---- explain ------------------------------------------------------------------------------


@policy_app.command("explain")
def explain(
    file: PolicyFile,
    event: Annotated[
        str, typer.Option("--event", metavar="SIGNAL.json|-", help="One signal, JSON form.")
    ],
    agency: AgencyOption = None,
    as_json: JsonFlag = False,
) -> None:
    """For one signal: every candidate recipient, allow or deny, the deciding rule(s), the view."""
    setup = _load(file)
    try:
        signal = SignalIn.model_validate_json(read_text(event))
    except ValidationError as exc:
        fail(f"{event}: {describe_errors(exc)}", code=2)
    try:
        publisher = publisher_of(signal, agency)
        facts = signal_facts(signal, publisher)
    except UsageError as exc:
        fail(f"{event}: {exc}", code=2)
    ex = explanation(setup, facts, publisher)
    if as_json:
        typer.echo(json.dumps(ex, indent=2))
    else:
        _print_explanation(ex, descriptions(setup))


def _print_explanation(ex: dict[str, Any], texts: dict[str, str]) -> None:
    decisions = ex["decisions"]
    typer.echo(f"policy {ex['policy']['name']} ({ex['policy']['version']})")
    typer.echo(f"event {ex['event_id']} from {ex['agency']}, located in commune "
               f"{ex['location']['municipality']} (arrondissement "
               f"{ex['location']['arrondissement']})")
    typer.echo("")
    width = max(len(d["recipient"]) for d in decisions) + 2
    typer.echo(f"{'RECIPIENT':<{width}}{'OUTCOME':<9}{'VIEW':<8}RULE(S)")
    for d in decisions:
        view = d["view"] if d["outcome"] == "allow" else "-"
        typer.echo(f"{d['recipient']:<{width}}{d['outcome']:<9}{view:<8}{', '.join(d['rules'])}")
    allowed = sum(1 for d in decisions if d["outcome"] == "allow")
    typer.echo("")
    typer.echo(f"{len(decisions)} candidates: {allowed} allow, {len(decisions) - allowed} deny")
    typer.echo("rules:")
    for rid in dict.fromkeys(rid for d in decisions for rid in d["rules"]):
        typer.echo(f"  {rid}: {texts[rid]}")
    typer.echo("views:")
    seen: dict[str, Any] = {}
    for d in decisions:
        if d["outcome"] == "allow":
            seen.setdefault(d["view"], d["fields"])
    for view, fields in seen.items():
        typer.echo(f"  {view}: {fields if fields == AGGREGATE else ', '.join(fields)}")


@policy_app.command("diff")
def diff(
    old: Annotated[Path, typer.Argument(help="The policy in force.", show_default=False)],
    new: Annotated[Path, typer.Argument(help="The proposed policy.", show_default=False)],
    *,
    events: Annotated[
        str, typer.Option("--events", metavar="SIGNALS.jsonl|-", help="Signals, JSON lines.")
    ],
    agency: AgencyOption = None,
    as_json: JsonFlag = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="List every added and removed delivery.")
    ] = False,
) -> None:
    """Dry-run OLD and NEW over a history of signals: deliveries added and removed per class."""
    codec = Codec()
    before, after = _load(old, codec), _load(new, codec)
    history, errors = read_history(read_text(events).splitlines(), agency)
    if errors:
        for e in errors:
            typer.echo(f"{events}: {e}", err=True)
        fail(f"{len(errors)} invalid signal line(s) in {events}; no diff computed", code=2)
    d = compare(before, after, history)
    heads = {"old": (old, before), "new": (new, after)}
    if as_json:
        typer.echo(json.dumps({
            **{k: {"source": str(p), "version": s.policy.version} for k, (p, s) in heads.items()},
            "signals": d.signals, "rules": d.rules, "views": d.views,
            "classes": {c.value: {
                "old": x.old, "new": x.new, "added": len(x.added), "removed": len(x.removed),
                "added_deliveries": [{"event_id": e, "recipient": r} for e, r in x.added],
                "removed_deliveries": [{"event_id": e, "recipient": r} for e, r in x.removed],
            } for c, x in d.classes.items()},
        }, indent=2))  # fmt: skip
        return
    for k, (path, s) in heads.items():
        typer.echo(f"{k}: {path} ({s.policy.version})")
    _print_diff(d, verbose=verbose)


def _print_diff(d: PolicyDiff, *, verbose: bool) -> None:
    typer.echo(f"signals: {d.signals}")
    for kind in ("added", "removed", "changed"):
        if d.rules[kind]:
            typer.echo(f"rules {kind}: {', '.join(d.rules[kind])}")
    for v in d.views:
        typer.echo(f"view of {v['class']}: {v['old_view']} -> {v['new_view']}; fields added "
                   f"{v['fields_added'] or '-'}, removed {v['fields_removed'] or '-'}")
    typer.echo("")
    typer.echo(f"{'CLASS':<8}{'OLD':>9}{'NEW':>9}{'ADDED':>9}{'REMOVED':>9}")
    for c, x in d.classes.items():
        typer.echo(f"{c.value:<8}{x.old:>9}{x.new:>9}{len(x.added):>9}{len(x.removed):>9}")
    if verbose:
        for c, x in d.classes.items():
            for event_id, rid in x.added:
                typer.echo(f"+ {c.value:<7}{rid:<40}{event_id}")
            for event_id, rid in x.removed:
                typer.echo(f"- {c.value:<7}{rid:<40}{event_id}")


@policy_app.command("apply")
def apply(
    ctx: typer.Context,
    file: PolicyFile,
    group: Annotated[str | None, typer.Option(
        help="Consumer group of this run (default: one per policy version).")] = None,
    until_idle: Annotated[float, typer.Option(
        min=0.1, help="Stop after this many seconds without input.")] = 5.0,
) -> None:
    """Apply a new policy to the retained history: every signal's latest version is decided
    again; newly entitled recipients receive it, no-longer-entitled ones get a retraction,
    unchanged ones get nothing. Applying the same policy twice changes nothing. Stop the
    routers first, and restart them with PLANR_POLICY pointing at FILE."""
    c = get(ctx)
    setup = _load(file)
    conn = c.connection()
    registry = c.key_registry()
    signer = c.signer(ROUTER, registry)
    group_id = group or f"planr-policy-apply-{setup.policy.version.removeprefix('sha256:')}"

    async def go() -> RouterStats:
        async with c.database("ledger") as db, Router(
                conn=conn, topics=c.topics, engine=setup.engine, views=setup.views,
                codec=setup.codec, metrics=default_metrics(), registry=registry, signer=signer,
                ledger=StoreLedger(db), group_id=group_id, reapply=True) as router:
            stats: RouterStats = await router.run(until_idle=until_idle)
            return stats

    try:
        stats = run_async(go())
    except PlanrError as exc:
        fail(f"policy apply stopped: {exc}")
    typer.echo(f"applied {setup.policy.version}: {sum(stats.deliveries.values())} deliveries to "
               f"newly entitled recipients, {sum(stats.retractions.values())} retractions, "
               f"{stats.unchanged['unchanged']} signals unchanged")
