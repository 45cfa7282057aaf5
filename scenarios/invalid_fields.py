"""Rule-breaking changes to a valid ``Signal`` record, for :mod:`scenarios.malformed`: each
changes the record in place and returns the dotted path of the field the dead letter must
name (the rules of :mod:`schemas.validation`; one broken rule per change, so the first
offending field is known)."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

FREE_TEXT_SUBJECT = "Jan Peeters, Hoogstraat 12, 1000 Brussel - informant says he is armed"
FREE_TEXT_COUNTRY = "Syria, via Turkey (informant)"
YEAR_2099 = datetime(2099, 6, 1, 12, 0, tzinfo=UTC)

Mutation = Callable[[random.Random, dict[str, Any]], str]


def _set(path: str, value: Callable[[random.Random], Any], *, field_: str | None = None
         ) -> Mutation:
    """Set the dotted ``path`` to ``value(rng)``; the dead letter must name ``field_``
    (default ``path``)."""

    def mutate(rng: random.Random, rec: dict[str, Any]) -> str:
        *parents, last = path.split(".")
        target = rec
        for p in parents:
            target = target[p]
        target[last] = value(rng)
        return field_ or path

    return mutate


def _both(values: dict[str, Any], field_: str) -> Mutation:
    def mutate(_rng: random.Random, rec: dict[str, Any]) -> str:
        rec.update(values)
        return field_

    return mutate


_NON_UUIDS = ("evt-000123", FREE_TEXT_SUBJECT, "0A000000-0000-4000-8000-000000000001",
              "0a0000000000400080000000000000001", "{0a000000-0000-4000-8000-000000000001}",
              "")  # fmt: skip
INVALID_FIELDS: tuple[Mutation, ...] = (
    _set("subject.id", lambda r: FREE_TEXT_SUBJECT),
    _set("subject.id", lambda r: "P-" + "9" * 70),
    _set("ftf", lambda r: {"situation": "returned", "country": FREE_TEXT_COUNTRY},
         field_="ftf.country"),
    _set("ftf", lambda r: {"situation": "returned", "country": "sy"}, field_="ftf.country"),
    _set("event_id", lambda r: r.choice(_NON_UUIDS)),
    _set("occurred_at", lambda r: YEAR_2099 + timedelta(minutes=r.randrange(10_000))),
    _both({"occurred_at": YEAR_2099, "published_at": YEAR_2099}, "published_at"),
    _set("accuracy", lambda r: r.choice((0, 5, -1, 99))),
    _set("ocam", lambda r: {"action": "include", "threat_level": r.choice((0, 5, 9)),
                            "basis": None}, field_="ocam.threat_level"),
    _both({"handling": "H2", "named_recipients": ["tfl:atlantis"]}, "named_recipients.0"),
    _both({"handling": "H0", "tlp": "amber", "named_recipients": ["ftf-db"]},
          "named_recipients"),
    _set("subject.statuses", lambda r: ["FTF", "FTF"]),
    _set("version", lambda r: r.choice((0, -3, 10_001))),
    _set("phenomena", lambda r: ["salafism"] * 6),
)
UNKNOWN_PLACES: tuple[Mutation, ...] = (
    _set("location", lambda r: {"municipality": r.choice(("99999", "00000", "21999")),
                                "prison": None}),
    _set("location", lambda r: {"municipality": "Molenbeek, near the station",
                                "prison": None}),
    _set("location", lambda r: {"municipality": None, "prison": "prison-of-atlantis"}),
    _set("location", lambda r: {"municipality": "21004", "prison": "prison-of-atlantis"}),
    _set("location", lambda r: {"municipality": None, "prison": None}),
)
