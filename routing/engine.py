"""The decision engine: a policy compiled into predicates, evaluated per (signal, recipient).

For each signal the engine names its candidate recipients (per class: the territory-matched
one, or all of the class, plus any recipient the owner named), and for each candidate:

- a matching ``forbid`` rule denies (it overrides every permit);
- otherwise a matching ``permit`` rule allows;
- otherwise the default denies (rule ``default-deny``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from planr import territory
from planr.domain import (
    Agency,
    Classification,
    Recipient,
    RecipientClass,
    WorkingGroup,
    all_recipients,
    tlp_from_avro,
)
from planr.errors import InvalidSignalError, UsageError
from routing.policy import Conditions, Policy, Remit, Rule

DEFAULT_DENY = "default-deny"


@dataclass(frozen=True, slots=True)
class Facts:
    """What rules may look at, computed once per signal. Holds no free text."""

    event_id: str
    agency: str
    classification: int
    handling: str
    tlp: str
    reliability: str
    accuracy: int
    local_sharing: bool
    kind: str
    statuses: frozenset[str]
    phenomena: frozenset[str]
    domains: frozenset[str]
    municipality: str
    arrondissement: str
    location_kind: str  # "municipality" or "prison" (a prison counts as its commune)
    ocam_decision: bool  # an `ocam` object with an action or a threat level
    named: frozenset[str]

    @classmethod
    def of(cls, signal: Mapping[str, Any]) -> Facts:
        """Facts of a decoded Avro signal; InvalidSignalError when it breaks the contract."""
        loc = signal["location"]
        if (loc.get("municipality") is None) == (loc.get("prison") is None):
            raise InvalidSignalError("location needs exactly one of municipality or prison",
                                     reason="bad_location")
        place = territory.resolve(municipality=loc.get("municipality"), prison=loc.get("prison"))
        if place is None:
            raise InvalidSignalError("unknown municipality or prison", reason="unknown_location")
        accuracy = int(signal["accuracy"])
        if not 1 <= accuracy <= 4:
            raise InvalidSignalError("accuracy outside 1-4", reason="bad_marking")
        named = []
        for rid in signal.get("named_recipients") or ():
            try:
                named.append(str(Recipient.parse(rid)))
            except UsageError:
                raise InvalidSignalError("unknown named recipient",
                                         reason="unknown_recipient") from None
        tlp = tlp_from_avro(signal["tlp"]).value
        if named and not (signal["handling"] == "H2" or tlp == "red"):
            raise InvalidSignalError("named recipients without H2 or TLP red",
                                     reason="bad_marking")
        subject = signal["subject"]
        return cls(
            event_id=signal["event_id"],
            agency=signal["agency"],
            classification=Classification(signal["classification"]).rank,
            handling=signal["handling"],
            tlp=tlp,
            reliability=signal["reliability"],
            accuracy=accuracy,
            local_sharing=bool(signal["local_sharing"]),
            kind=subject["kind"],
            statuses=frozenset(subject["statuses"]),
            phenomena=frozenset(signal["phenomena"]),
            domains=frozenset(signal["domains"]),
            municipality=place.municipality,
            arrondissement=place.arrondissement,
            location_kind="municipality" if loc.get("prison") is None else "prison",
            ocam_decision=_carries_ocam_decision(signal.get("ocam")),
            named=frozenset(named),
        )


def _carries_ocam_decision(ocam: Mapping[str, Any] | None) -> bool:
    """An ``ocam`` object decides something when it has an action or a threat level (whoever
    sent it: the rules say whose decisions count)."""
    return ocam is not None and (ocam.get("action") is not None
                                 or ocam.get("threat_level") is not None)


@dataclass(frozen=True, slots=True)
class Decision:
    recipient: Recipient
    allowed: bool
    rule: str
    rules: tuple[str, ...]
    view: str


Predicate = Callable[[Facts, Recipient], bool]


def _in_remit(remit: Remit, f: Facts) -> bool:
    return bool(
        f.phenomena.intersection(remit.phenomena)
        or f.domains.intersection(remit.domains)
        or f.statuses.intersection(remit.statuses)
    )


def _compile_conditions(c: Conditions, remits: Mapping[str, Remit]) -> list[Predicate]:
    """One predicate per given condition (the vocabulary: docs/policy.md)."""
    return [*_marking_predicates(c), *_signal_predicates(c), *_recipient_predicates(c, remits)]


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

    def matches(self, f: Facts, r: Recipient) -> bool:
        return self.applies_to(r) and all(p(f, r) for p in self.conditions)


class Engine:
    """Evaluate a policy. Pure and deterministic: no I/O, no clock."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        doc = policy.document
        remits = {w.value: doc.working_groups[w] for w in WorkingGroup}
        self._remits = remits
        self._rules = [
            CompiledRule(
                rule.id,
                rule.effect == "forbid",
                _compile_targets(rule),
                tuple(_compile_conditions(rule.when, remits)),
            )
            for rule in doc.rules
        ]
        self._views = {c: doc.classes[c].view for c in RecipientClass}
        self._applicable: dict[Recipient, tuple[CompiledRule, ...]] = {}
        by_class: dict[RecipientClass, list[Recipient]] = {c: [] for c in RecipientClass}
        for r in all_recipients():
            by_class[r.cls].append(r)
        self._all_of = {c: tuple(v) for c, v in by_class.items()}
        self._scope = {c: doc.classes[c].candidates for c in RecipientClass}

    @property
    def version(self) -> str:
        return self.policy.version

    def view_of(self, recipient: Recipient) -> str:
        return self._views[recipient.cls]

    def candidates(self, f: Facts) -> list[Recipient]:
        """The recipients a decision is taken (and audited) for, in a stable order."""
        out: list[Recipient] = []
        for cls_, scope in self._scope.items():
            if scope == "all":
                out.extend(self._all_of[cls_])
            elif scope == "arrondissement" and cls_ is RecipientClass.TFL:
                out.append(Recipient(cls_, f.arrondissement))
            elif scope == "municipality" and cls_ is RecipientClass.CSILR:
                out.append(Recipient(cls_, f.municipality))
            elif scope == "remit":
                out.extend(r for r in self._all_of[cls_] if r.key in self._remits
                           and _in_remit(self._remits[r.key], f))
            elif scope == "arrondissement":
                out.extend(r for r in self._all_of[cls_] if _same_arrondissement(f, r))
        seen = {str(r) for r in out}
        out.extend(Recipient.parse(rid) for rid in sorted(f.named - seen))
        return out

    def _rules_for(self, r: Recipient) -> tuple[CompiledRule, ...]:
        rules = self._applicable.get(r)
        if rules is None:
            rules = self._applicable[r] = tuple(x for x in self._rules if x.applies_to(r))
        return rules

    def decide_one(self, f: Facts, r: Recipient) -> Decision:
        forbids: list[str] = []
        permits: list[str] = []
        for rule in self._rules_for(r):
            if all(p(f, r) for p in rule.conditions):
                (forbids if rule.forbid else permits).append(rule.id)
        view = self._views[r.cls]
        if forbids:
            return Decision(r, False, forbids[0], tuple(forbids), view)
        if permits:
            return Decision(r, True, permits[0], tuple(permits), view)
        return Decision(r, False, DEFAULT_DENY, (DEFAULT_DENY,), view)

    def decide(self, f: Facts) -> list[Decision]:
        return [self.decide_one(f, r) for r in self.candidates(f)]


def agency_label(agency: str) -> str:
    """A metric-safe agency label (an enum value, or 'unknown')."""
    return agency if agency in {a.value for a in Agency} else "unknown"
