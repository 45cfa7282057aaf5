"""The rules every JIB record obeys, whichever way it arrives: one definition for the command
line (``planr jib propose`` / ``vote`` check before they sign) and for the consensus process
(which checks every decoded record before it takes it).

A failure raises :class:`JibRecordError` with ``field`` set to the field's name and a message
stating the rule only: never the value (``grounds`` and ``reason`` are content).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, Final

from planr import territory
from planr.domain import Agency
from planr.errors import PlanrError
from planr.parties import arrondissement_of_tfl, is_tfl, parse_party
from schemas.validation import check_event_id, check_subject_id

ACTIONS: Final = ("insert", "remove")
CHOICES: Final = ("approve", "object")
OUTCOMES: Final = ("adopted", "rejected", "expired")
MAX_GROUNDS_CHARS: Final = 4_000
MAX_REASON_CHARS: Final = 1_000
MAX_WINDOW: Final = timedelta(days=92)
"""The longest time a proposal may stay open: its deadline is at most this after
``proposed_at`` (a quarter, the rhythm at which local taskforces meet at the least)."""


class JibRecordError(PlanrError, ValueError):
    """A JIB record that breaks the rules; ``field`` names the field, never its value."""

    def __init__(self, message: str, *, reason: str, field: str) -> None:
        super().__init__(f"{field}: {message}", reason=reason)
        self.field = field


def _text(value: object, max_chars: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be non-empty text")
    if len(value) > max_chars:
        raise ValueError(f"must be at most {max_chars} characters")
    return value


def _aware(value: object) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise ValueError("must be a timezone-aware time")
    return value


def _one_of(allowed: tuple[str, ...]) -> Callable[[object], str]:
    def check(value: object) -> str:
        if value not in allowed:
            raise ValueError("must be one of " + ", ".join(allowed))
        return str(value)
    return check


def _party(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError("must be a party id")
    return parse_party(value)


def _agency(value: object) -> str:
    try:
        return Agency(str(value)).value
    except ValueError:
        raise ValueError("must be an agency id") from None


def _arrondissement(value: object) -> str:
    if value not in territory.arrondissement_ids():
        raise ValueError("must be a judicial arrondissement id")
    return str(value)


def _check(record: Mapping[str, Any], reason: str,
           checks: Mapping[str, Callable[[object], object]]) -> None:
    for field, check in checks.items():
        try:
            check(record.get(field))
        except (ValueError, TypeError) as exc:
            raise JibRecordError(str(exc), reason=reason, field=field) from None


def check_proposal(record: Mapping[str, Any]) -> None:
    """A proposal: ids, a known proposer and arrondissement (a TFL proposes for its own), a
    subject id, an action, grounds, and a deadline after ``proposed_at`` within
    :data:`MAX_WINDOW`."""
    reason = "invalid_proposal"
    _check(record, reason, {
        "proposal_id": check_event_id, "proposer": _party, "arrondissement": _arrondissement,
        "subject_id": check_subject_id, "action": _one_of(ACTIONS),
        "grounds": lambda v: _text(v, MAX_GROUNDS_CHARS), "proposed_at": _aware,
        "deadline": _aware,
    })
    proposer = record["proposer"]
    if is_tfl(proposer) and arrondissement_of_tfl(proposer) != record["arrondissement"]:
        raise JibRecordError("a local taskforce proposes for its own arrondissement",
                               reason=reason, field="arrondissement")
    if record["deadline"] <= record["proposed_at"]:
        raise JibRecordError("must be later than proposed_at", reason=reason, field="deadline")
    if record["deadline"] > record["proposed_at"] + MAX_WINDOW:
        raise JibRecordError(f"must be at most {MAX_WINDOW.days} days after proposed_at",
                               reason=reason, field="deadline")


def check_vote(record: Mapping[str, Any]) -> None:
    """A vote: ids, an agency, a choice, a reason, a time."""
    _check(record, "invalid_vote", {
        "vote_id": check_event_id, "proposal_id": check_event_id, "service": _agency,
        "choice": _one_of(CHOICES), "reason": lambda v: _text(v, MAX_REASON_CHARS),
        "cast_at": _aware,
    })


def check_tick(record: Mapping[str, Any]) -> None:
    _check(record, "invalid_tick", {"tick_id": check_event_id, "at": _aware})
