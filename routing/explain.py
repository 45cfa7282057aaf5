"""Explain a decision: for one signal, every candidate recipient with its outcome, the
deciding rule(s), their descriptions and the view. Ids, labels and field names only: never a
signal's summary or other free text."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from planr.domain import Agency, Recipient, RecipientClass
from planr.errors import PlanrError, UsageError
from routing.engine import DEFAULT_DENY, Decision, Engine, Facts
from routing.policy import AGGREGATE
from routing.setup import RoutingSetup
from schemas.models import SignalIn

DEFAULT_DENY_DESCRIPTION = "No permit rule matched: default deny."


def descriptions(setup: RoutingSetup) -> dict[str, str]:
    """The one-line description of every rule id, the default-deny pseudo-rule included."""
    out = {rule.id: rule.description for rule in setup.policy.rules}
    out[DEFAULT_DENY] = DEFAULT_DENY_DESCRIPTION
    return out


def view_fields(setup: RoutingSetup, view: str) -> list[str] | str:
    """The fields of a view, or ``aggregate`` for counts only."""
    fields = setup.policy.document.views[view]
    return AGGREGATE if fields == AGGREGATE else list(fields)


def publisher_of(signal: SignalIn, option: Agency | None, where: str = "") -> Agency:
    """The agency of a signal: its own, or the one given on the command line (both: equal)."""
    if signal.agency is not None and option is not None and signal.agency is not option:
        raise UsageError(f"{where}agency: does not match --agency {option.value}")
    agency = signal.agency or option
    if agency is None:
        raise UsageError(f"{where}agency: missing; give it in the signal or with --agency")
    return agency


def signal_facts(signal: SignalIn, agency: Agency, where: str = "") -> Facts:
    """What the engine decides on; a UsageError names the place (``where``) and the field."""
    try:
        return Facts.of(signal.to_avro(agency))
    except PlanrError as exc:
        raise UsageError(f"{where}{exc}") from None


def decision_json(d: Decision, setup: RoutingSetup, texts: dict[str, str]) -> dict[str, Any]:
    return {
        "recipient": str(d.recipient),
        "class": d.recipient.cls.value,
        "outcome": "allow" if d.allowed else "deny",
        "rule": d.rule,
        "rules": list(d.rules),
        "description": texts[d.rule],
        "view": d.view,
        "fields": view_fields(setup, d.view),
    }


def explanation(setup: RoutingSetup, facts: Facts, publisher: Agency) -> dict[str, Any]:
    """The whole explanation of one signal, as a JSON-ready object."""
    texts = descriptions(setup)
    return {
        "policy": {"name": setup.policy.document.name, "version": setup.policy.version},
        "event_id": facts.event_id,
        "agency": publisher.value,
        "location": {"municipality": facts.municipality, "arrondissement": facts.arrondissement},
        "decisions": [decision_json(d, setup, texts) for d in setup.engine.decide(facts)],
    }


def database_denial(engine: Engine, signal: SignalIn, agency: Agency) -> Decision | None:
    """For OCAM's decision on the common database (an ``ocam`` object with an action or a
    threat level, published by OCAM): the policy's denial of ``ftf-db``, or None when the
    decision reaches the database. None for every other signal."""
    if agency is not Agency.OCAM:
        return None
    facts = Facts.of(signal.to_avro(agency))
    if not facts.ocam_decision:
        return None
    decision = engine.decide_one(facts, Recipient(RecipientClass.FTF_DB))
    return None if decision.allowed else decision


def hold_back_lost_ocam_decisions(
    numbered: Sequence[tuple[int, SignalIn]], agency: Agency, engine: Callable[[], Engine]
) -> tuple[list[SignalIn], list[str]]:
    """Split (line number, signal) pairs into the signals to publish and one error per OCAM
    decision that the policy would deny to the common database: its line, ``ftf-db`` and the
    deciding rule. Such a decision is held back rather than silently lost. The engine is
    built only when there is an OCAM decision to check."""
    if agency is not Agency.OCAM or all(s.ocam is None for _, s in numbered):
        return [s for _, s in numbered], []
    built = engine()
    texts = {rule.id: rule.description for rule in built.policy.rules}
    texts[DEFAULT_DENY] = DEFAULT_DENY_DESCRIPTION
    keep: list[SignalIn] = []
    errors: list[str] = []
    for number, s in numbered:
        denial = database_denial(built, s, agency)
        if denial is None:
            keep.append(s)
        else:
            errors.append(f"line {number}: ocam: this decision would not reach ftf-db: denied "
                          f"by rule {denial.rule} ({texts[denial.rule]}); not published")
    return keep, errors
