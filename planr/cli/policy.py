"""``planr policy``: tooling for the people who write need-to-know policy.

- ``check FILE`` validates a policy (and its views against their ``.avsc``);
- ``explain FILE --event SIGNAL.json`` shows, for one signal, every candidate recipient with
  its outcome, the deciding rule(s) and the view;
- ``diff OLD NEW --events SIGNALS.jsonl`` dry-runs both policies over a history of signals and
  shows the deliveries that would be added and removed, per recipient class.

Need-to-know applies here too: output and errors carry ids, labels and field names, never a
signal's summary or other free text.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from planr.cli.context import fail
from planr.domain import Agency, RecipientClass
from planr.errors import PlanrError, UsageError
from routing.engine import DEFAULT_DENY, Decision, Facts
from routing.policy import AGGREGATE
from routing.setup import RoutingSetup, prepare
from schemas.codec import Codec
from schemas.models import SignalIn, describe_errors

policy_app = typer.Typer(
    help="Check, explain and compare need-to-know policies.", no_args_is_help=True
)

DEFAULT_DENY_DESCRIPTION = "No permit rule matched: default deny."

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


def _read_text(source: str) -> str:
    if source == "-":
        return sys.stdin.read()
    try:
        return Path(source).read_text(encoding="utf-8")
    except OSError as exc:
        fail(f"cannot read {source}: {exc.strerror}", code=2)
    except UnicodeDecodeError:
        fail(f"{source} is not UTF-8 text", code=2)


def _descriptions(setup: RoutingSetup) -> dict[str, str]:
    out = {rule.id: rule.description for rule in setup.policy.rules}
    out[DEFAULT_DENY] = DEFAULT_DENY_DESCRIPTION
    return out


def _view_fields(setup: RoutingSetup, view: str) -> list[str] | str:
    fields = setup.policy.document.views[view]
    return AGGREGATE if fields == AGGREGATE else list(fields)


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
    typer.echo(f"version: {setup.policy.version}")


# ---- explain ------------------------------------------------------------------------------


def _agency_of(signal: SignalIn, option: Agency | None, where: str) -> Agency:
    if signal.agency is not None and option is not None and signal.agency is not option:
        raise UsageError(f"{where}agency: does not match --agency {option.value}")
    agency = signal.agency or option
    if agency is None:
        raise UsageError(f"{where}agency: missing; give it in the signal or with --agency")
    return agency


def _facts(signal: SignalIn, agency: Agency, where: str) -> Facts:
    try:
        return Facts.of(signal.to_avro(agency))
    except PlanrError as exc:
        raise UsageError(f"{where}{exc}") from None


def _decision_json(d: Decision, setup: RoutingSetup, texts: dict[str, str]) -> dict[str, Any]:
    return {
        "recipient": str(d.recipient),
        "class": d.recipient.cls.value,
        "outcome": "allow" if d.allowed else "deny",
        "rule": d.rule,
        "rules": list(d.rules),
        "description": texts[d.rule],
        "view": d.view,
        "fields": _view_fields(setup, d.view),
    }


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
        signal = SignalIn.model_validate_json(_read_text(event))
    except ValidationError as exc:
        fail(f"{event}: {describe_errors(exc)}", code=2)
    try:
        publisher = _agency_of(signal, agency, "")
        facts = _facts(signal, publisher, "")
    except UsageError as exc:
        fail(f"{event}: {exc}", code=2)
    decisions = setup.engine.decide(facts)
    texts = _descriptions(setup)
    if as_json:
        typer.echo(json.dumps({
            "policy": {"name": setup.policy.document.name, "version": setup.policy.version},
            "event_id": facts.event_id,
            "agency": publisher.value,
            "location": {"municipality": facts.municipality,
                         "arrondissement": facts.arrondissement},
            "decisions": [_decision_json(d, setup, texts) for d in decisions],
        }, indent=2))  # fmt: skip
        return
    typer.echo(f"policy {setup.policy.document.name} ({setup.policy.version})")
    typer.echo(f"event {facts.event_id} from {publisher.value}, located in commune "
               f"{facts.municipality} (arrondissement {facts.arrondissement})")
    typer.echo("")
    width = max(len(str(d.recipient)) for d in decisions) + 2
    typer.echo(f"{'RECIPIENT':<{width}}{'OUTCOME':<9}{'VIEW':<8}RULE(S)")
    for d in decisions:
        outcome = "allow" if d.allowed else "deny"
        view = d.view if d.allowed else "-"
        typer.echo(f"{d.recipient!s:<{width}}{outcome:<9}{view:<8}{', '.join(d.rules)}")
    allowed = sum(1 for d in decisions if d.allowed)
    typer.echo("")
    typer.echo(f"{len(decisions)} candidates: {allowed} allow, {len(decisions) - allowed} deny")
    typer.echo("rules:")
    used = dict.fromkeys(rid for d in decisions for rid in d.rules)
    for rid in used:
        typer.echo(f"  {rid}: {texts[rid]}")
    typer.echo("views:")
    for view in dict.fromkeys(d.view for d in decisions if d.allowed):
        fields = _view_fields(setup, view)
        typer.echo(f"  {view}: {fields if fields == AGGREGATE else ', '.join(fields)}")


# ---- diff ---------------------------------------------------------------------------------


@dataclass
class ClassDiff:
    old: int = 0
    new: int = 0
    added: list[tuple[str, str]] = field(default_factory=list)
    removed: list[tuple[str, str]] = field(default_factory=list)


def read_history(lines: list[str], agency: Agency | None) -> tuple[list[Facts], list[str]]:
    """The facts of every signal line, and one error per invalid line (number and field)."""
    facts: list[Facts] = []
    errors: list[str] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"line {number}: "
        try:
            signal = SignalIn.model_validate_json(line)
        except ValidationError as exc:
            errors.append(f"{where}{describe_errors(exc)}")
            continue
        try:
            facts.append(_facts(signal, _agency_of(signal, agency, where), where))
        except UsageError as exc:
            errors.append(str(exc))
    return facts, errors


def _allowed(setup: RoutingSetup, f: Facts) -> set[str]:
    return {str(d.recipient) for d in setup.engine.decide(f) if d.allowed}


def delivery_diff(
    old: RoutingSetup, new: RoutingSetup, history: list[Facts]
) -> dict[RecipientClass, ClassDiff]:
    """Per recipient class: deliveries under each policy, and the (event, recipient) pairs
    that the new policy adds and removes."""
    out = {c: ClassDiff() for c in RecipientClass}
    for f in history:
        before, after = _allowed(old, f), _allowed(new, f)
        for rid in before:
            out[_class_of(rid)].old += 1
        for rid in after:
            out[_class_of(rid)].new += 1
        for rid in sorted(after - before):
            out[_class_of(rid)].added.append((f.event_id, rid))
        for rid in sorted(before - after):
            out[_class_of(rid)].removed.append((f.event_id, rid))
    return out


def _class_of(rid: str) -> RecipientClass:
    return RecipientClass(rid.partition(":")[0])


def _view_changes(old: RoutingSetup, new: RoutingSetup) -> Iterator[dict[str, Any]]:
    for c in RecipientClass:
        ov = old.policy.document.classes[c].view
        nv = new.policy.document.classes[c].view
        of, nf = _view_fields(old, ov), _view_fields(new, nv)
        if ov == nv and of == nf:
            continue
        olds = set(of) if isinstance(of, list) else {AGGREGATE}
        news = set(nf) if isinstance(nf, list) else {AGGREGATE}
        yield {"class": c.value, "old_view": ov, "new_view": nv,
               "fields_added": sorted(news - olds), "fields_removed": sorted(olds - news)}


def _rule_changes(old: RoutingSetup, new: RoutingSetup) -> dict[str, list[str]]:
    before = {r.id: r.model_dump(mode="json") for r in old.policy.rules}
    after = {r.id: r.model_dump(mode="json") for r in new.policy.rules}
    return {
        "added": sorted(after.keys() - before.keys()),
        "removed": sorted(before.keys() - after.keys()),
        "changed": sorted(k for k in before.keys() & after.keys() if before[k] != after[k]),
    }


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
    history, errors = read_history(_read_text(events).splitlines(), agency)
    if errors:
        for e in errors:
            typer.echo(f"{events}: {e}", err=True)
        fail(f"{len(errors)} invalid signal line(s) in {events}; no diff computed", code=2)
    per_class = delivery_diff(before, after, history)
    views = list(_view_changes(before, after))
    rules = _rule_changes(before, after)
    if as_json:
        typer.echo(json.dumps({
            "old": {"source": str(old), "version": before.policy.version},
            "new": {"source": str(new), "version": after.policy.version},
            "signals": len(history),
            "rules": rules,
            "views": views,
            "classes": {c.value: {
                "old": d.old, "new": d.new, "added": len(d.added), "removed": len(d.removed),
                "added_deliveries": [{"event_id": e, "recipient": r} for e, r in d.added],
                "removed_deliveries": [{"event_id": e, "recipient": r} for e, r in d.removed],
            } for c, d in per_class.items()},
        }, indent=2))  # fmt: skip
        return
    typer.echo(f"old: {old} ({before.policy.version})")
    typer.echo(f"new: {new} ({after.policy.version})")
    typer.echo(f"signals: {len(history)}")
    for kind in ("added", "removed", "changed"):
        if rules[kind]:
            typer.echo(f"rules {kind}: {', '.join(rules[kind])}")
    for v in views:
        typer.echo(f"view of {v['class']}: {v['old_view']} -> {v['new_view']}; fields added "
                   f"{v['fields_added'] or '-'}, removed {v['fields_removed'] or '-'}")
    typer.echo("")
    typer.echo(f"{'CLASS':<8}{'OLD':>9}{'NEW':>9}{'ADDED':>9}{'REMOVED':>9}")
    for c, d in per_class.items():
        typer.echo(f"{c.value:<8}{d.old:>9}{d.new:>9}{len(d.added):>9}{len(d.removed):>9}")
    if verbose:
        for c, d in per_class.items():
            for event_id, rid in d.added:
                typer.echo(f"+ {c.value:<7}{rid:<40}{event_id}")
            for event_id, rid in d.removed:
                typer.echo(f"- {c.value:<7}{rid:<40}{event_id}")
