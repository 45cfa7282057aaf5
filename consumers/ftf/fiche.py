"""The fiche of the common database and how one contribution changes it (pure functions).

A fiche is created by the first contribution of a feeding service (state ``proposed``); only
OCAM includes it (``included``), removes it (``removed``) and sets its threat level. Fields
are derived from the contributions only, never from the wall clock, so replaying the same
deliveries gives the same fiches:

- statuses: the union of the five database statuses contributed;
- location and FTF situation: from the contribution that occurred last;
- ``review_due``: for an included entry based only on serious indications, 6 months after
  its last new information (the latest ``occurred_at`` of a contribution).
"""

from __future__ import annotations

import calendar
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from consumers.ftf.governance import MANAGER, AccessMode
from planr import territory
from planr.domain import DATABASE_STATUSES

REVIEW_MONTHS = 6
SERIOUS_INDICATIONS = "serious_indications"
REMOVAL_NS = uuid.UUID("0b5e7c1e-3f55-4f0e-a3c6-6a2d8f1e9c41")

PROPOSED = "proposed"
INCLUDED = "included"
REMOVED = "removed"


def add_months(when: datetime, months: int) -> datetime:
    """``when`` plus calendar months, clamping the day (31 Aug + 6 months = 28/29 Feb)."""
    index = when.month - 1 + months
    year, month = when.year + index // 12, index % 12 + 1
    day = min(when.day, calendar.monthrange(year, month)[1])
    return when.replace(year=year, month=month, day=day)


def join_labels(values: Any) -> str:
    return ",".join(sorted(map(str, values))) if values else ""


def split_labels(text: str) -> frozenset[str]:
    return frozenset(t for t in text.split(",") if t)


@dataclass
class Fiche:
    subject_id: str
    kind: str
    state: str
    statuses: frozenset[str]
    first_info_at: datetime
    last_info_at: datetime
    last_event_id: str
    contributions: int = 0
    ftf_situation: str | None = None
    ftf_country: str | None = None
    ftf_at: datetime | None = None
    threat_level: int | None = None
    basis: str | None = None
    municipality: str | None = None
    prison: str | None = None
    arrondissement: str | None = None
    location_at: datetime | None = None
    included_at: datetime | None = None
    removed_at: datetime | None = None
    last_review_at: datetime | None = None
    review_due: datetime | None = None

    def row(self) -> dict[str, Any]:
        # a shallow copy of the fields (every value is immutable); asdict() deep-copies each
        data = dict(vars(self))
        data["statuses"] = join_labels(self.statuses)
        return data

    def copy(self) -> Fiche:
        """A shallow copy (fields are immutable values): cheaper than ``dataclasses.replace``."""
        twin = object.__new__(Fiche)
        twin.__dict__.update(vars(self))
        return twin

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> Fiche:
        data = dict(row)
        data["statuses"] = split_labels(data["statuses"])
        return cls(**data)

    def public(self) -> dict[str, Any]:
        """The fiche as a consulting service sees it (JSON-ready)."""
        out = self.row()
        out["statuses"] = sorted(self.statuses)
        for k, v in out.items():
            if isinstance(v, datetime):
                out[k] = v.isoformat().replace("+00:00", "Z")
        return out


@dataclass(slots=True)
class Outcome:
    """What one event does: the new fiche, its contribution row, a removal. (Its governance
    audits depend on the record alone: :func:`governance_audits`.)"""

    outcome: str  # applied | feed_denied
    fiche: Fiche | None
    contribution: dict[str, Any] | None = None
    removal: dict[str, Any] | None = None


def contribution_row(view: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "event_id": view["event_id"],
        "subject_id": view["subject"]["id"],
        "agency": view["agency"],
        "occurred_at": view["occurred_at"],
        "published_at": view["published_at"],
        "statuses": join_labels(view["subject"].get("statuses")),
        "phenomena": join_labels(view.get("phenomena")),
        "domains": join_labels(view.get("domains")),
        "classification": view["classification"],
        "handling": view["handling"],
        "tlp": view["tlp"],
        "reliability": view["reliability"],
        "accuracy": int(view["accuracy"]),
    }


def _ocam_fields(view: Mapping[str, Any]) -> dict[str, Any]:
    ocam = view.get("ocam") or {}
    return {k: v for k, v in ocam.items() if v is not None}


def governance_audits(view: Mapping[str, Any], mode: AccessMode) -> list[tuple[str, str]]:
    """The governance audit records (reason, detail) one record from a service with access
    ``mode`` gives rise to: they depend on that record alone, never on the fiche."""
    if not mode.feeds:
        return [("feed_denied", f"access_mode={mode}")]
    decision = _ocam_fields(view)
    if decision and view["agency"] != MANAGER.value:
        return [("ocam_fields_ignored", "fields=" + join_labels(decision))]
    level = decision.get("threat_level")
    if level is not None and not 1 <= int(level) <= 4:
        return [("invalid_threat_level", "threat_level outside 1-4")]
    return []


def apply(fiche: Fiche | None, view: Mapping[str, Any], mode: AccessMode) -> Outcome:
    """Apply one ``FtfDbView`` record from a service with access ``mode`` to ``fiche``."""
    if not mode.feeds:
        return Outcome("feed_denied", fiche)
    event_id: str = view["event_id"]
    occurred: datetime = view["occurred_at"]
    subject = view["subject"]
    decision = _ocam_fields(view) if view["agency"] == MANAGER.value else {}
    f = (
        fiche.copy()
        if fiche is not None
        else Fiche(subject["id"], subject["kind"], PROPOSED, frozenset(), occurred, occurred,
                   event_id)
    )
    f.statuses = f.statuses | (frozenset(subject.get("statuses") or ()) & DATABASE_STATUSES)
    f.first_info_at = min(f.first_info_at, occurred)
    f.last_info_at = max(f.last_info_at, occurred)
    f.contributions += 1
    f.last_event_id = event_id
    if f.location_at is None or occurred >= f.location_at:
        loc = view["location"]
        place = territory.resolve(municipality=loc.get("municipality"), prison=loc.get("prison"))
        f.municipality, f.prison = loc.get("municipality"), loc.get("prison")
        f.arrondissement = place.arrondissement if place is not None else None
        f.location_at = occurred
    ftf = view.get("ftf")
    if ftf is not None and (f.ftf_at is None or occurred >= f.ftf_at):
        f.ftf_situation, f.ftf_country, f.ftf_at = ftf["situation"], ftf.get("country"), occurred
    removal = _decide(f, decision, event_id, occurred) if decision else None
    f.review_due = (
        add_months(f.last_info_at, REVIEW_MONTHS)
        if f.state == INCLUDED and f.basis == SERIOUS_INDICATIONS
        else None
    )
    return Outcome("applied", f, contribution_row(view), removal)


def _decide(
    f: Fiche, decision: Mapping[str, Any], event_id: str, occurred: datetime
) -> dict[str, Any] | None:
    """Apply OCAM's decision to ``f``; returns a removal event when an entry is removed. (A
    threat level outside 1-4 is not applied: :func:`governance_audits` records it.)"""
    level = decision.get("threat_level")
    if level is not None and 1 <= int(level) <= 4:
        f.threat_level = int(level)
    if "basis" in decision:
        f.basis = str(decision["basis"])
    f.last_review_at = occurred if f.last_review_at is None else max(f.last_review_at, occurred)
    action = decision.get("action")
    if action == "include" and f.state != INCLUDED:
        f.state, f.included_at, f.removed_at = INCLUDED, occurred, None
    elif action == "remove" and f.state != REMOVED:
        was_included = f.state == INCLUDED
        f.state, f.removed_at, f.threat_level = REMOVED, occurred, None
        if was_included:
            return {
                "removal_id": str(uuid.uuid5(REMOVAL_NS, event_id)),
                "subject_id": f.subject_id,
                "event_id": event_id,
                "removed_at": occurred,
                "decided_by": MANAGER.value,
            }
    return None
