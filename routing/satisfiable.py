"""Rules that can never match: a small, exact satisfiability check of each rule.

A rule matches a (signal, recipient) pair when the recipient is one the rule applies to
(``recipients`` minus ``except``) and every ``when`` condition holds, as ``routing/engine.py``
evaluates them. A rule that no pair can match is a mistake (a forbid that protects nothing,
a permit that grants nothing), so loading rejects it, naming the line of the condition that
leaves nothing. Decided exactly, in this order:

1. ``classification_above: tres_secret`` (nothing is above), or ``classification_at_most``
   at or below ``classification_above`` (no level is in both);
2. ``location_municipality`` naming no commune of the listed ``location_arrondissement``,
   or ``location_kind: [prison]`` where those conditions leave no commune with a prison (a
   prison counts as its commune);
3. ``named: true`` when ``handling`` excludes H2 and ``tlp`` excludes red (a signal names
   recipients only with H2 or TLP red);
4. ``except`` excluding every recipient of ``recipients``;
5. ``territory``, per recipient the rule applies to: ``municipality`` holds only for the
   CSIL R of the signal's commune, ``arrondissement`` only for the TFL of the signal's
   arrondissement and the CSIL R of its communes (both within the location conditions,
   ``location_kind`` included);
6. ``remit``, per recipient left: ``true`` holds only for a working group with a non-empty
   remit; ``false`` fails for a working group when a ``phenomena_any``, ``domains_any`` or
   ``statuses_any`` condition lists only values of its remit.

Why this is exact: apart from the pairs above, each condition constrains a signal field of
its own (any non-empty list of valid values can be met, and a signal may carry several
phenomena, domains and statuses, or none; ``ocam_decision`` reads the ``ocam`` object, which
any service may send), and per recipient ``territory`` reads only the location while
``remit`` reads only phenomena, domains and statuses. Empty lists are
rejected before this check runs. Not considered, so never a reason to reject: whether a
recipient is a candidate for the signals that match (a recipient its owner names always is).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import cache
from typing import TYPE_CHECKING

from planr import territory
from planr.domain import Classification, Handling, Recipient, RecipientClass, Tlp, all_recipients
from routing.yamlmap import Loc

if TYPE_CHECKING:
    from routing.policy import Conditions, Remit, Rule

Problem = tuple[Loc, str]
_TOP = max(c.rank for c in Classification)


def _named_by(names: frozenset[str], r: Recipient) -> bool:
    """``names`` (recipient classes or ids) names ``r``."""
    return r.cls.value in names or str(r) in names


def _targets(rule: Rule) -> list[Recipient]:
    """The recipients the rule applies to, as the engine reads ``recipients``/``except``."""
    include = frozenset(rule.recipients) if rule.recipients is not None else None
    exclude = frozenset(rule.except_)
    return [r for r in all_recipients()
            if (include is None or _named_by(include, r)) and not _named_by(exclude, r)]


def _classification_problem(c: Conditions) -> Problem | None:
    above, at_most = c.classification_above, c.classification_at_most
    if above is None:
        return None
    if above.rank == _TOP:
        return ("classification_above",), f"no classification is above {above.value}"
    if at_most is not None and at_most.rank <= above.rank:
        return ("classification_above",), (
            f"no classification is both above {above.value} and at most {at_most.value}")
    return None


@cache
def _prison_communes() -> frozenset[str]:
    """The communes that have a prison."""
    places = (territory.resolve(prison=p) for p in territory.prison_ids())
    return frozenset(place.municipality for place in places if place is not None)


def _communes(c: Conditions, *, kind: bool = True) -> set[str]:
    """The communes a matching signal can be located in (with ``kind``: ``location_kind``
    considered too)."""
    muns = set(c.location_municipality or territory.municipality_ids())
    if c.location_arrondissement is not None:
        arrs = set(c.location_arrondissement)
        muns = {m for m in muns if territory.arrondissement_of(m) in arrs}
    if kind and c.location_kind is not None and "municipality" not in c.location_kind:
        muns &= _prison_communes()
    return muns


def _fact_problems(c: Conditions) -> list[Problem]:
    """Conditions that no signal meets, whoever the recipient."""
    problems = [p for p in [_classification_problem(c)] if p is not None]
    if c.location_municipality is not None and c.location_arrondissement is not None \
            and not _communes(c, kind=False):
        problems.append((("location_municipality",),
                         "none of these communes is in the listed location_arrondissement"))
    elif c.location_kind is not None and not _communes(c):
        problems.append((("location_kind",), "location_kind: [prison] and no prison is in "
                         "the communes that the location conditions allow"))
    if c.named and not ((c.handling is None or Handling.H2 in c.handling)
                        or (c.tlp is None or Tlp.RED in c.tlp)):
        problems.append((("named",), "a signal names recipients only with handling H2 or "
                         "TLP red, which the handling and tlp conditions exclude"))
    return problems


def _territory_filter(c: Conditions) -> Callable[[Recipient], bool]:
    communes = _communes(c)
    if c.territory == "municipality":
        return lambda r: r.cls is RecipientClass.CSILR and r.key in communes
    arrs = {territory.arrondissement_of(m) for m in communes}

    def same_arrondissement(r: Recipient) -> bool:
        if r.cls is RecipientClass.TFL:
            return r.key in arrs
        if r.cls is RecipientClass.CSILR and r.key is not None:
            return territory.arrondissement_of(r.key) in arrs
        return False

    return same_arrondissement


def _only_from(wanted: Sequence[str] | None, remit: Sequence[str]) -> bool:
    """An ``*_any`` condition that only values of the remit can meet."""
    return wanted is not None and set(wanted) <= set(remit)


def _remit_filter(c: Conditions, remits: Mapping[str, Remit]) -> Callable[[Recipient], bool]:
    def possible(r: Recipient) -> bool:
        remit = remits.get(r.key or "") if r.cls is RecipientClass.WG else None
        if c.remit:
            return remit is not None and bool(remit.phenomena or remit.domains
                                              or remit.statuses)
        if remit is None:
            return True  # not a working group: never in a remit
        return not (_only_from(c.phenomena_any, remit.phenomena)
                    or _only_from(c.domains_any, remit.domains)
                    or _only_from(c.statuses_any, remit.statuses))

    return possible


def _recipient_problem(rule: Rule, remits: Mapping[str, Remit]) -> Problem | None:
    """The first recipient-side condition that leaves no recipient, if any."""
    c = rule.when
    left = _targets(rule)
    if not left:
        return ("except",), ("except excludes every recipient that recipients names: the rule "
                             "applies to no one")
    if c.territory is not None:
        left = list(filter(_territory_filter(c), left))
        if not left:
            return ("when", "territory"), (
                f"territory: {c.territory} holds for none of the recipients this rule "
                "applies to (with its location conditions)")
    if c.remit is not None:
        left = list(filter(_remit_filter(c, remits), left))
        if not left:
            return ("when", "remit"), (
                "remit: true holds only for working groups with a remit" if c.remit else
                "remit: false cannot hold for these working groups: the phenomena_any, "
                "domains_any or statuses_any condition lists only values of their remit")
    return None


def never_matching(rules: list[Rule], remits: Mapping[str, Remit]) -> list[Problem]:
    """For each rule that no (signal, recipient) pair can match, why, at its place
    ``("rules", i, ...)``. ``remits`` maps working group ids to their remit."""
    problems: list[Problem] = []
    for i, rule in enumerate(rules):
        found = [(("when", *loc), msg) for loc, msg in _fact_problems(rule.when)]
        if not found:
            recipient = _recipient_problem(rule, remits)
            found = [recipient] if recipient is not None else []
        problems.extend(((("rules", i, *loc), f"the rule can never match: {msg}")
                         for loc, msg in found))
    return problems
