"""Months and facts of the NTF statistics: pure helpers, no I/O."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

#: The phenomenon of a signal with none.
NONE = "none"
_PERIOD = re.compile(r"\d{4}-(0[1-9]|1[0-2])")
#: An arrondissement or phenomenon label: no separator of the store ('*', ',', '|', spaces).
_LABEL = re.compile(r"[^*,|\s]{1,64}")
_ID = re.compile(r"[^\s]{1,64}")


def month_end(period: str) -> datetime:
    """The first instant (UTC) after the month ``YYYY-MM``."""
    year, month = int(period[:4]), int(period[5:7])
    return datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)


def is_closed(period: str, now: datetime, grace: timedelta) -> bool:
    """Whether the month is over, and its grace period too, at ``now``."""
    return now >= month_end(period) + grace


def fact_error(fact: dict[str, Any]) -> str | None:
    """The name of the first malformed field of a decoded NtfFact, or ``None``."""
    if not _ID.fullmatch(fact["event_id"]):
        return "event_id"
    if not _PERIOD.fullmatch(fact["period"]):
        return "period"
    if not _LABEL.fullmatch(fact["arrondissement"]):
        return "arrondissement"
    phenomena = fact["phenomena"]
    if not all(_LABEL.fullmatch(p) for p in phenomena) or len(",".join(phenomena)) > 512:
        return "phenomena"
    return None


def content(fact: dict[str, Any]) -> dict[str, Any]:
    """What a fact says, for its fingerprint: not its policy version (a replay under another
    policy says the same) nor its event id."""
    return {"period": fact["period"], "arrondissement": fact["arrondissement"],
            "phenomena": sorted(set(fact["phenomena"]))}
