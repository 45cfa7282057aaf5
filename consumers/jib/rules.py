"""The consensus rules of the JIB: pure functions of the records taken, in the order of the
input topic, so that a replay (after a crash, a SIGKILL) decides exactly as the first run.

- A proposal opens with the panel of its arrondissement (from the panels file, never from the
  proposer). If the JIB's clock has already reached its deadline, it expires at once.
- A vote is refused (with a reason, and audited) when its proposal is unknown
  (``unknown_proposal``), its service is not in the panel (``not_required``), the service has
  voted already (``already_voted``), the proposal is decided (``decided``), or it was cast at
  or after the deadline (``late``). Otherwise it is counted.
- The first counted objection rejects the proposal; the approval that completes the panel
  adopts it; a tick whose time reaches the deadline of an open proposal expires it. Nothing
  else decides, so each proposal gets exactly one decision.
- ``decided_at`` is the deciding vote's ``cast_at``, or the deadline for an expiry: times
  carried by signed records, never the consumer's clock.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

ADOPTED, REJECTED, EXPIRED = "adopted", "rejected", "expired"
COUNTED: Final = "counted"
REFUSALS: Final = ("unknown_proposal", "not_required", "already_voted", "decided", "late")
DECISION_NS = uuid.UUID("5f3c1d2e-8a4b-4c6d-9e0f-1a2b3c4d5e6f")


def decision_id(proposal_id: str) -> str:
    """One decision per proposal: its id is derived from the proposal's."""
    return str(uuid.uuid5(DECISION_NS, proposal_id))


@dataclass
class Proposal:
    """A proposal and its votes so far. ``outcome`` is None while it is open."""

    proposal_id: str
    proposer: str
    arrondissement: str
    subject_id: str
    action: str
    proposed_at: datetime
    deadline: datetime
    panel: tuple[str, ...]
    approvals: list[str] = field(default_factory=list)
    objections: list[str] = field(default_factory=list)
    outcome: str | None = None
    decided_at: datetime | None = None
    deciding_vote: str | None = None

    @property
    def is_open(self) -> bool:
        return self.outcome is None

    def participants(self) -> set[str]:
        """Who may consult it: the services of its panel and its proposer."""
        return {*self.panel, self.proposer}


@dataclass(frozen=True)
class Decision:
    """The decision on ``proposal`` (which holds it too, with its votes)."""

    proposal: Proposal
    outcome: str
    decided_at: datetime

    @property
    def decision_id(self) -> str:
        return decision_id(self.proposal.proposal_id)

    def record(self) -> dict[str, Any]:
        """The ``JibDecision`` record (ids and labels only)."""
        p = self.proposal
        return {"decision_id": self.decision_id, "proposal_id": p.proposal_id,
                "proposer": p.proposer, "arrondissement": p.arrondissement,
                "subject_id": p.subject_id, "action": p.action, "outcome": self.outcome,
                "decided_at": self.decided_at, "deciding_vote": p.deciding_vote,
                "approvals": list(p.approvals), "objections": list(p.objections)}


def _decide(p: Proposal, outcome: str, at: datetime, vote_id: str | None) -> Decision:
    p.outcome, p.decided_at, p.deciding_vote = outcome, at, vote_id
    return Decision(p, outcome, at)


def open_proposal(
    record: Mapping[str, Any], panel: Sequence[str], clock: datetime | None
) -> tuple[Proposal, Decision | None]:
    """Take a (valid) ``JibProposal`` record with its arrondissement's panel."""
    p = Proposal(
        proposal_id=record["proposal_id"], proposer=record["proposer"],
        arrondissement=record["arrondissement"], subject_id=record["subject_id"],
        action=record["action"], proposed_at=record["proposed_at"],
        deadline=record["deadline"], panel=tuple(panel),
    )
    if clock is not None and p.deadline <= clock:
        return p, _decide(p, EXPIRED, p.deadline, None)
    return p, None


def refusal(p: Proposal | None, vote: Mapping[str, Any]) -> str | None:
    """Why a vote cannot be counted (the first reason that applies), or None."""
    if p is None:
        return "unknown_proposal"
    service = vote["service"]
    reasons = (
        (service not in p.panel, "not_required"),
        (service in p.approvals or service in p.objections, "already_voted"),
        (not p.is_open, "decided"),
        (vote["cast_at"] >= p.deadline, "late"),
    )
    return next((reason for failed, reason in reasons if failed), None)


def take_vote(p: Proposal | None, vote: Mapping[str, Any]) -> tuple[str, Decision | None]:
    """Apply a (valid) ``JibVote``: ``(COUNTED, decision or None)`` or ``(refusal, None)``."""
    refused = refusal(p, vote)
    if p is None or refused is not None:
        return refused or "unknown_proposal", None
    service = vote["service"]
    if vote["choice"] == "object":
        p.objections.append(service)
        return COUNTED, _decide(p, REJECTED, vote["cast_at"], vote["vote_id"])
    p.approvals.append(service)
    if set(p.approvals) == set(p.panel):
        return COUNTED, _decide(p, ADOPTED, vote["cast_at"], vote["vote_id"])
    return COUNTED, None


def take_tick(proposals: Iterable[Proposal], at: datetime) -> list[Decision]:
    """Expire every open proposal whose deadline ``at`` has reached (in deadline order)."""
    due = sorted((p for p in proposals if p.is_open and p.deadline <= at),
                 key=lambda p: (p.deadline, p.proposal_id))
    return [_decide(p, EXPIRED, p.deadline, None) for p in due]
