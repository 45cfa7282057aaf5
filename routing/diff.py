"""Compare two policies over a history of signals: the deliveries each would make, and the
(event, recipient) pairs the new one adds and removes, per recipient class; the rules and views
that changed."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from planr.domain import Agency, RecipientClass
from planr.errors import UsageError
from routing.engine import Facts
from routing.explain import publisher_of, signal_facts, view_fields
from routing.policy import AGGREGATE
from routing.setup import RoutingSetup
from schemas.models import SignalIn, describe_errors


@dataclass
class ClassDiff:
    old: int = 0
    new: int = 0
    added: list[tuple[str, str]] = field(default_factory=list)
    removed: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class PolicyDiff:
    classes: dict[RecipientClass, ClassDiff]
    rules: dict[str, list[str]]
    views: list[dict[str, Any]]
    signals: int


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
            facts.append(signal_facts(signal, publisher_of(signal, agency, where), where))
        except UsageError as exc:
            errors.append(str(exc))
    return facts, errors


def _allowed(setup: RoutingSetup, f: Facts) -> set[str]:
    return {str(d.recipient) for d in setup.engine.decide(f) if d.allowed}


def _class_of(rid: str) -> RecipientClass:
    return RecipientClass(rid.partition(":")[0])


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


def view_changes(old: RoutingSetup, new: RoutingSetup) -> Iterator[dict[str, Any]]:
    for c in RecipientClass:
        ov = old.policy.document.classes[c].view
        nv = new.policy.document.classes[c].view
        of, nf = view_fields(old, ov), view_fields(new, nv)
        if ov == nv and of == nf:
            continue
        olds = set(of) if isinstance(of, list) else {AGGREGATE}
        news = set(nf) if isinstance(nf, list) else {AGGREGATE}
        yield {"class": c.value, "old_view": ov, "new_view": nv,
               "fields_added": sorted(news - olds), "fields_removed": sorted(olds - news)}


def rule_changes(old: RoutingSetup, new: RoutingSetup) -> dict[str, list[str]]:
    before = {r.id: r.model_dump(mode="json") for r in old.policy.rules}
    after = {r.id: r.model_dump(mode="json") for r in new.policy.rules}
    return {
        "added": sorted(after.keys() - before.keys()),
        "removed": sorted(before.keys() - after.keys()),
        "changed": sorted(k for k in before.keys() & after.keys() if before[k] != after[k]),
    }


def compare(old: RoutingSetup, new: RoutingSetup, history: list[Facts]) -> PolicyDiff:
    return PolicyDiff(classes=delivery_diff(old, new, history), rules=rule_changes(old, new),
                      views=list(view_changes(old, new)), signals=len(history))
