"""Policy conditions compiled into predicates over a signal's facts and a recipient.

Each given condition of a rule becomes one predicate (the vocabulary: docs/policy.md); the
predicates that look at the signal alone are also kept apart, so that an engine can evaluate
them once per signal rather than once per candidate.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from planr import territory
from planr.domain import Recipient, RecipientClass
from routing.policy import Conditions, Remit, Rule

if TYPE_CHECKING:
    from routing.engine import Facts

Predicate = Callable[["Facts", Recipient], bool]


def _in_remit(remit: Remit, f: Facts) -> bool:
    return bool(
        f.phenomena.intersection(remit.phenomena)
        or f.domains.intersection(remit.domains)
        or f.statuses.intersection(remit.statuses)
    )


def _compile_conditions(c: Conditions, remits: Mapping[str, Remit]) -> list[Predicate]:
    """One predicate per given condition (the vocabulary: docs/policy.md)."""
    return [*_marking_predicates(c), *_signal_predicates(c), *_recipient_predicates(c, remits)]


def _signal_only(c: Conditions) -> list[Predicate]:
    """The conditions that look at the signal alone (the same for every candidate)."""
    return [*_marking_predicates(c), *_signal_predicates(c)]


def _marking_predicates(c: Conditions) -> list[Predicate]:
    """The owner's markings: classification, handling, TLP, grading, local sharing."""
    preds: list[Predicate] = []
    if c.classification_at_most is not None:
        top = c.classification_at_most.rank
        preds.append(lambda f, r: f.classification <= top)
    if c.classification_above is not None:
        floor = c.classification_above.rank
        preds.append(lambda f, r: f.classification > floor)
    if c.handling is not None:
        handling = frozenset(h.value for h in c.handling)
        preds.append(lambda f, r: f.handling in handling)
    if c.tlp is not None:
        tlps = frozenset(t.value for t in c.tlp)
        preds.append(lambda f, r: f.tlp in tlps)
    if c.reliability is not None:
        rel = frozenset(x.value for x in c.reliability)
        preds.append(lambda f, r: f.reliability in rel)
    if c.accuracy_at_most is not None:
        acc = c.accuracy_at_most
        preds.append(lambda f, r: f.accuracy <= acc)
    if c.local_sharing is not None:
        flag = c.local_sharing
        preds.append(lambda f, r: f.local_sharing is flag)
    return preds


def _signal_predicates(c: Conditions) -> list[Predicate]:
    """What the signal is about, where, from whom, and whether it carries OCAM's decision."""
    preds: list[Predicate] = []
    if c.subject_kind is not None:
        kinds = frozenset(k.value for k in c.subject_kind)
        preds.append(lambda f, r: f.kind in kinds)
    if c.statuses_any is not None:
        st = frozenset(s.value for s in c.statuses_any)
        preds.append(lambda f, r: not f.statuses.isdisjoint(st))
    if c.phenomena_any is not None:
        ph = frozenset(p.value for p in c.phenomena_any)
        preds.append(lambda f, r: not f.phenomena.isdisjoint(ph))
    if c.domains_any is not None:
        dom = frozenset(d.value for d in c.domains_any)
        preds.append(lambda f, r: not f.domains.isdisjoint(dom))
    if c.agency is not None:
        ag = frozenset(a.value for a in c.agency)
        preds.append(lambda f, r: f.agency in ag)
    if c.ocam_decision is not None:
        decided = c.ocam_decision
        preds.append(lambda f, r: f.ocam_decision is decided)
    if c.location_arrondissement is not None:
        arrs = frozenset(c.location_arrondissement)
        preds.append(lambda f, r: f.arrondissement in arrs)
    if c.location_municipality is not None:
        muns = frozenset(c.location_municipality)
        preds.append(lambda f, r: f.municipality in muns)
    if c.location_kind is not None:
        places = frozenset(c.location_kind)
        preds.append(lambda f, r: f.location_kind in places)
    return preds


def _recipient_predicates(c: Conditions, remits: Mapping[str, Remit]) -> list[Predicate]:
    """Conditions on the recipient too: its territory, its remit, whether it was named."""
    preds: list[Predicate] = []
    if c.territory == "arrondissement":
        preds.append(_same_arrondissement)
    elif c.territory == "municipality":
        preds.append(lambda f, r: r.cls is RecipientClass.CSILR and r.key == f.municipality)
    if c.remit is not None:
        want = c.remit
        preds.append(
            lambda f, r: (
                r.cls is RecipientClass.WG and r.key is not None and _in_remit(remits[r.key], f)
            )
            is want
        )
    if c.named is not None:
        named = c.named
        preds.append(lambda f, r: (str(r) in f.named) is named)
    return preds


def _same_arrondissement(f: Facts, r: Recipient) -> bool:
    if r.cls is RecipientClass.TFL:
        return r.key == f.arrondissement
    if r.cls is RecipientClass.CSILR and r.key is not None:
        return territory.arrondissement_of(r.key) == f.arrondissement
    return False


def _compile_targets(rule: Rule) -> Callable[[Recipient], bool]:
    def matcher(items: list[str]) -> Callable[[Recipient], bool]:
        classes = frozenset(i for i in items if ":" not in i and i in set(RecipientClass))
        ids = frozenset(items) - classes
        return lambda r: r.cls.value in classes or str(r) in ids

    include = matcher(rule.recipients) if rule.recipients is not None else (lambda r: True)
    exclude = matcher(rule.except_) if rule.except_ else (lambda r: False)
    return lambda r: include(r) and not exclude(r)


@dataclass(frozen=True)
class CompiledRule:
    id: str
    forbid: bool
    applies_to: Callable[[Recipient], bool]
    conditions: tuple[Predicate, ...]
    #: ``conditions`` split: those on the signal alone, and those on the recipient too
    signal_conditions: tuple[Predicate, ...] = ()
    recipient_conditions: tuple[Predicate, ...] = ()

    def matches(self, f: Facts, r: Recipient) -> bool:
        return self.applies_to(r) and all(p(f, r) for p in self.conditions)
