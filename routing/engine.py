"""The decision engine: a policy compiled into predicates, evaluated per (signal, recipient).

For each signal the engine names its candidate recipients (per class: the territory-matched
one, or all of the class, plus any recipient the owner named), and for each candidate:

- a matching ``forbid`` rule denies (it overrides every permit);
- otherwise a matching ``permit`` rule allows;
- otherwise the default denies (rule ``default-deny``).
"""

from __future__ import annotations

from collections.abc import Mapping
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
from routing.policy import Policy, Remit
from routing.predicates import (
    CompiledRule,
    Predicate,
    _compile_conditions,
    _compile_targets,
    _in_remit,
    _recipient_predicates,
    _same_arrondissement,
    _signal_only,
)

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
    recipient_id: str  # ``str(recipient)``, computed once


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
                tuple(_signal_only(rule.when)),
                tuple(_recipient_predicates(rule.when, remits)),
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
        self._slots: dict[str, _Slot] = {}
        self._by_class = {c: tuple(self._slot(r) for r in v) for c, v in self._all_of.items()}
        self._remit_index = {c: _remit_index(self._by_class[c], remits) for c in RecipientClass}

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
            return Decision(r, False, forbids[0], tuple(forbids), view, str(r))
        if permits:
            return Decision(r, True, permits[0], tuple(permits), view, str(r))
        return Decision(r, False, DEFAULT_DENY, (DEFAULT_DENY,), view, str(r))

    def decide(self, f: Facts) -> tuple[Decision, ...]:
        """Every candidate's decision, in :meth:`candidates` order: the same decisions as
        :meth:`decide_one` per candidate, with each rule's signal-only conditions evaluated
        once per signal (not once per candidate) and the candidates found through
        precomputed indexes."""
        signal_ok: dict[int, bool] = {}
        out: list[Decision] = []
        for slot in self._candidate_slots(f):
            r = slot.recipient
            matched = 0  # a bit per matching rule, in the slot's order
            for bit, i, on_signal, on_recipient in slot.checks:
                ok = signal_ok.get(i)
                if ok is None:
                    ok = signal_ok[i] = on_signal is None or on_signal(f, r)
                if ok and (on_recipient is None or on_recipient(f, r)):
                    matched |= bit
            decision = slot.decisions.get(matched)
            if decision is None:
                decision = slot.decision(matched)
            out.append(decision)
        return tuple(out)

    def _slot(self, r: Recipient) -> _Slot:
        rid = str(r)
        slot = self._slots.get(rid)
        if slot is None:
            rules = tuple((i, x) for i, x in enumerate(self._rules) if x.applies_to(r))
            slot = self._slots[rid] = _Slot(r, rid, rules, self._views[r.cls])
        return slot

    def _candidate_slots(self, f: Facts) -> list[_Slot]:
        """:meth:`candidates`, as precomputed slots."""
        out: list[_Slot] = []
        for cls_, scope in self._scope.items():
            if scope == "all":
                out.extend(self._by_class[cls_])
            elif scope == "arrondissement" and cls_ is RecipientClass.TFL:
                out.append(self._slots.get(f"tfl:{f.arrondissement}")
                           or self._slot(Recipient(cls_, f.arrondissement)))
            elif scope == "municipality" and cls_ is RecipientClass.CSILR:
                out.append(self._slots.get(f"csilr:{f.municipality}")
                           or self._slot(Recipient(cls_, f.municipality)))
            elif scope == "remit":
                index, hit = self._remit_index[cls_], set[int]()
                for kind, values in (("p", f.phenomena), ("d", f.domains), ("s", f.statuses)):
                    for v in values:
                        hit.update(index.get((kind, v), ()))
                slots = self._by_class[cls_]
                out.extend(slots[i] for i in sorted(hit))
            elif scope == "arrondissement":
                out.extend(s for s in self._by_class[cls_]
                           if _same_arrondissement(f, s.recipient))
        if f.named:
            seen = {s.id for s in out}
            out.extend(self._slot(Recipient.parse(rid)) for rid in sorted(f.named - seen))
        return out


def _remit_index(slots: tuple[_Slot, ...],
                 remits: Mapping[str, Remit]) -> dict[tuple[str, str], list[int]]:
    """For a class's recipients (in order): each phenomenon, domain or status, the positions of
    the recipients whose remit names it (what ``candidates: remit`` selects by)."""
    index: dict[tuple[str, str], list[int]] = {}
    for i, s in enumerate(slots):
        remit = remits.get(s.recipient.key or "")
        if remit is not None:
            tags = {*(("p", str(v)) for v in remit.phenomena),
                    *(("d", str(v)) for v in remit.domains),
                    *(("s", str(v)) for v in remit.statuses)}
            for tag in tags:
                index.setdefault(tag, []).append(i)
    return index


class _Slot:
    """A recipient with what deciding for it needs: its id, the rules that apply (each with
    its conditions, split as :class:`CompiledRule` splits them), its view, and its decisions
    by the set of its rules that matched (a bit per rule: few distinct sets recur)."""

    __slots__ = ("checks", "decisions", "id", "recipient", "rules", "view")

    def __init__(self, recipient: Recipient, rid: str,
                 rules: tuple[tuple[int, CompiledRule], ...], view: str) -> None:
        self.recipient, self.id, self.rules, self.view = recipient, rid, rules, view
        self.checks = tuple((1 << k, i, _all_of(rule.signal_conditions),
                             _all_of(rule.recipient_conditions))
                            for k, (i, rule) in enumerate(rules))
        self.decisions: dict[int, Decision] = {}

    def decision(self, matched: int) -> Decision:
        """The decision when the rules of the bits of ``matched`` match: a matching forbid
        overrides every permit, and no match denies (remembered, up to a bound)."""
        hits = [rule for k, (_, rule) in enumerate(self.rules) if matched >> k & 1]
        forbids = tuple(rule.id for rule in hits if rule.forbid)
        permits = tuple(rule.id for rule in hits if not rule.forbid)
        r, view, rid = self.recipient, self.view, self.id
        if forbids:
            d = Decision(r, False, forbids[0], forbids, view, rid)
        elif permits:
            d = Decision(r, True, permits[0], permits, view, rid)
        else:
            d = Decision(r, False, DEFAULT_DENY, (DEFAULT_DENY,), view, rid)
        if len(self.decisions) < _DECISIONS_PER_SLOT:
            self.decisions[matched] = d
        return d


def _all_of(conditions: tuple[Predicate, ...]) -> Predicate | None:
    """One predicate true when every one of ``conditions`` is (``None``: there is none)."""
    if not conditions:
        return None
    if len(conditions) == 1:
        return conditions[0]
    if len(conditions) == 2:
        first, second = conditions
        return lambda f, r: first(f, r) and second(f, r)
    return lambda f, r: all(p(f, r) for p in conditions)


#: Bound on the decisions a slot remembers (the distinct sets of matching rules; a handful in
#: practice, the bound only guards against a pathological policy).
_DECISIONS_PER_SLOT = 1_024


_AGENCIES = frozenset(a.value for a in Agency)


def agency_label(agency: str) -> str:
    """A metric-safe agency label (an enum value, or 'unknown')."""
    return agency if agency in _AGENCIES else "unknown"
