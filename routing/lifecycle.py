"""A signal's whole life, as pure decisions: publication, corrections, withdrawal.

An event is (agency, event id). Its owner may publish it (version 1), correct it (the next
version: content may change, markings may only become stricter or stay) or withdraw it. The
router keeps, in its ledger, the state of every event and who holds which version; for each
arriving record this module says what follows:

- a first publication, or a correction with a higher version, is routed under the current
  policy: recipients still entitled get the new version (same delivery id), recipients that
  held it and no longer are get a retraction (``not_entitled``);
- a withdrawal retracts it from every holder (``withdrawn``); the event stays withdrawn, and a
  version that arrives afterwards (out of order) is stale;
- the same version again with the same content is a duplicate (a replay, a retried publish);
  with other content, or from another agency, a conflict; a lower version is stale: versions
  apply in order, whatever order they arrive in.

Nothing here does I/O: the router loads the states of a batch's events, asks, and saves.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from planr.domain import Classification, Handling, Tlp, tlp_from_avro

_CLASSIFICATION = {c.value: i for i, c in enumerate(Classification)}
#: Handling codes from the least to the most restrictive.
_HANDLING = {h.value: i for i, h in enumerate(Handling)}
_TLP = {t.value: i for i, t in enumerate(Tlp)}


class Verdict(StrEnum):
    ROUTE = "route"  # route this version (first publication or correction)
    WITHDRAW = "withdraw"  # retract from every holder
    DUPLICATE = "duplicate"  # same version, same content: nothing to do
    STALE = "stale"  # an older version, or anything after a withdrawal: nothing to do
    CONFLICT = "event_id_conflict"  # same id, other agency or other content: dead letter
    LOOSENED = "loosened_markings"  # a correction may not loosen markings: dead letter


class RetractionReason(StrEnum):
    WITHDRAWN = "withdrawn"
    NOT_ENTITLED = "not_entitled"
    REMOVED = "removed_from_database"


@dataclass(frozen=True)
class Markings:
    """The owner's markings of one version, compared when it is corrected."""

    classification: str
    handling: str
    tlp: str
    local_sharing: bool
    named: frozenset[str]

    @classmethod
    def of(cls, signal: Mapping[str, Any]) -> Markings:
        return cls(signal["classification"], signal["handling"],
                   tlp_from_avro(signal["tlp"]).value, bool(signal["local_sharing"]),
                   frozenset(signal.get("named_recipients") or ()))

    def loosened_by(self, new: Markings) -> str | None:
        """The first marking ``new`` loosens (a field name), or ``None``."""
        if _CLASSIFICATION[new.classification] < _CLASSIFICATION[self.classification]:
            return "classification"
        if _HANDLING[new.handling] < _HANDLING[self.handling]:
            return "handling"
        if _TLP[new.tlp] < _TLP[self.tlp]:
            return "tlp"
        if new.local_sharing and not self.local_sharing:
            return "local_sharing"
        if self.named and not new.named <= self.named:
            return "named_recipients"
        return None


@dataclass
class Holding:
    """Who received the event: the delivery id is the same for every version."""

    recipient: str
    delivery_id: str
    version: int
    active: bool = True


@dataclass
class EventState:
    """What the ledger knows of one event."""

    event_id: str
    agency: str
    subject_id: str
    version: int
    withdrawn: bool = False
    fingerprint: str | None = None
    markings: Markings | None = None
    holdings: dict[str, Holding] = field(default_factory=dict)

    def holders(self) -> list[Holding]:
        return [h for h in self.holdings.values() if h.active]


class Ledger(Protocol):
    """Where the router keeps its events' states (``consumers.ledger.StoreLedger``)."""

    async def load(self, event_ids: Iterable[str]) -> dict[str, EventState]: ...

    async def save(self, states: Sequence[EventState], at: datetime) -> None: ...

    async def subject_events(self, subject_id: str) -> list[str]: ...


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    #: for LOOSENED, the marking; for CONFLICT, what differs (``agency`` or ``content``)
    detail: str = ""


def judge_signal(state: EventState | None, agency: str, version: int, fingerprint: str,
                 markings: Markings) -> Judgement:
    """What to do with version ``version`` of an event, given what the ledger knows."""
    if state is None:
        return Judgement(Verdict.ROUTE)
    if state.agency != agency:
        return Judgement(Verdict.CONFLICT, "agency")
    if state.withdrawn or version < state.version:
        return Judgement(Verdict.STALE)
    if version == state.version:
        same = state.fingerprint is None or state.fingerprint == fingerprint
        return Judgement(Verdict.DUPLICATE) if same else Judgement(Verdict.CONFLICT, "content")
    loosened = state.markings.loosened_by(markings) if state.markings is not None else None
    return Judgement(Verdict.LOOSENED, loosened) if loosened else Judgement(Verdict.ROUTE)


def judge_withdrawal(state: EventState | None, agency: str, version: int) -> Judgement:
    """A withdrawal of version ``version``: retract from every holder, once."""
    if state is None:
        return Judgement(Verdict.WITHDRAW)  # not routed yet: remembered, so it never will be
    if state.agency != agency:
        return Judgement(Verdict.CONFLICT, "agency")
    if state.withdrawn or version < state.version:
        return Judgement(Verdict.STALE)
    return Judgement(Verdict.WITHDRAW)


def after_routing(state: EventState | None, *, event_id: str, agency: str, subject_id: str,
                  version: int, fingerprint: str, markings: Markings,
                  allowed: Mapping[str, str]) -> tuple[EventState, list[Holding]]:
    """The state once ``version`` was routed to ``allowed`` (recipient -> delivery id), and the
    holdings to retract (held before, no longer entitled)."""
    new = state or EventState(event_id, agency, subject_id, version)
    new.version, new.subject_id = version, subject_id
    new.fingerprint, new.markings = fingerprint, markings
    retract = [h for h in new.holders() if h.recipient not in allowed]
    for h in retract:
        h.active = False
    for recipient, did in allowed.items():
        new.holdings[recipient] = Holding(recipient, did, version)
    return new, retract


def after_withdrawal(state: EventState | None, *, event_id: str, agency: str,
                     version: int) -> tuple[EventState, list[Holding]]:
    """The state once withdrawn, and the holdings to retract (every active one)."""
    new = state or EventState(event_id, agency, "", version)
    new.withdrawn = True
    new.version = max(new.version, version)
    retract = new.holders()
    for h in retract:
        h.active = False
    return new, retract
